"""JAX's persistent compilation cache, set once at start-up.

Every command that runs a model (:func:`fcn_jax.cli.start`) stores compiled
steps in ``config.compilation_cache_dir`` (commands without a config:
:func:`default_directory`), so a later run of the same program (a resumed
training, the next evaluation of a checkpoint) loads it instead of compiling
again: seconds to minutes per shape on GPUs and TPUs. The thresholds are set
so that every FCN step is stored (JAX's default skips programs that compiled
in under a second). An empty directory turns the cache off.

Which backends reuse the entries (measured, docs in README "Compilation
cache"): GPU and TPU load them. On CPU (jaxlib 0.10.2) entries are written,
but a new process does not load them (JAX issue 38445: XLA:CPU executables
are rejected on reload), so on CPU the cache costs a little disk and saves
nothing; it is harmless.

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
