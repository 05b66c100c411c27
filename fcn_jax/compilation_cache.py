"""JAX's persistent compilation cache, set once at start-up.

Every command that runs a model (:func:`fcn_jax.cli.start`) stores compiled
steps in ``config.compilation_cache_dir`` (commands without a config:
:func:`default_directory`), so a later run of the same program (a resumed
training, the next evaluation of a checkpoint) loads it instead of compiling
again: seconds to minutes per shape on GPUs and TPUs. The thresholds are set
so that every FCN step is stored (JAX's default skips programs that compiled
in under a second). An empty directory turns the cache off.

Which backends reuse the entries: GPUs and TPUs (JAX's documented use). On
CPUs it depends on the host: on this project's machine (jaxlib 0.10.2, x86-64)
a second process loads every entry (tests/compilation_cache_test.py; a tiny
FCN-8s forward pass: 2.0 s compiling, 0.14 s from the cache), while JAX issue
38445 reports XLA:CPU rejecting its own entries on reload on some hosts
(AVX-512 Xeons: "Target machine feature +prefer-no-gather is not supported"),
where the cache costs a little disk and saves nothing.

This module imports JAX only when :func:`configure` runs.
"""

from __future__ import annotations

import os

from absl import logging

ENV_VAR = "FCN_JAX_COMPILATION_CACHE_DIR"


def default_directory() -> str:
  """``$FCN_JAX_COMPILATION_CACHE_DIR`` if set (empty: off), else
  ``$XDG_CACHE_HOME/fcn_jax/jax_cache`` (``~/.cache/fcn_jax/jax_cache``)."""
  if ENV_VAR in os.environ:
    return os.environ[ENV_VAR]
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      "~", ".cache")
  return os.path.join(cache_home, "fcn_jax", "jax_cache")


def configure(directory: str | None) -> str | None:
  """Turns the persistent compilation cache on in ``directory`` (``~``
  expanded; None: :func:`default_directory`; empty: off).

  Returns:
    The cache directory in use, or None when off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if directory is None:
    directory = default_directory()
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  # Store every program: a small FCN step compiles in well under JAX's
  # default 1 s threshold on a fast host and would be skipped.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("JAX persistent compilation cache: %s.", directory)
  return directory
