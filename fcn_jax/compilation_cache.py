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

Several CPU processes (one multi-host run) do not use it:
:func:`turn_off_for_cpu_processes`.

A directory that cannot be used costs the cache, never the run: one warning
line, and the command goes on without it (:func:`configure`).

This module imports JAX only when its functions run.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings

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

  A directory that cannot be created or written (a file, a read-only file
  system) is one warning line naming the setting, and the cache stays off;
  entries that fail later are one such line in all.

  Returns:
    The cache directory in use, or None when off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if directory is None:
    directory = default_directory()
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  try:  # Created, and writable: a test file, as JAX will write its entries.
    os.makedirs(directory, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".write_test_")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    logging.warning("%s", _unusable(directory, e.strerror or str(e)))
    return None
  _report_entry_errors_once(directory)
  jax.config.update("jax_compilation_cache_dir", directory)
  # Store every program: a small FCN step compiles in well under JAX's
  # default 1 s threshold on a fast host and would be skipped.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("JAX persistent compilation cache: %s.", directory)
  return directory


def _unusable(directory: str, problem: str) -> str:
  return (f"The compilation cache {directory} cannot be used ({problem}); "
          "going on without it (each run compiles its steps again). Set "
          f"config.compilation_cache_dir (or ${ENV_VAR}) to a writable "
          "folder, or to '' to turn the cache off.")


# JAX warns once per program when an entry cannot be read or written (a
# cache folder removed or made read-only while a command runs).
_ENTRY_ERROR = re.compile(
    r"Error (reading|writing) persistent compilation cache entry")
# The folder in use, whether its first entry error was reported, and
# whether the warnings hook is installed.
_entry_errors = {"directory": None, "reported": False, "hooked": False}


def _report_entry_errors_once(directory: str) -> None:
  """Shows JAX's cache entry errors as one line, the first time; the
  others are dropped (the run goes on, compiling what it cannot load)."""
  _entry_errors.update(directory=directory, reported=False)
  if _entry_errors["hooked"]:
    return
  _entry_errors["hooked"] = True
  show_next = warnings.showwarning

  def show(message, category, filename, lineno, file=None, line=None):
    if not _ENTRY_ERROR.match(str(message)):
      return show_next(message, category, filename, lineno, file, line)
    if not _entry_errors["reported"]:
      _entry_errors["reported"] = True
      logging.warning("%s", _unusable(_entry_errors["directory"],
                                      str(message)))
    return None

  warnings.showwarning = show


def turn_off_for_cpu_processes() -> bool:
  """Turns the cache off in a multi-process CPU run (call after
  ``jax.distributed.initialize``, before anything compiles).

  There the cache makes the processes arrive at each collective far apart
  (tens of seconds for the tests' tiny FCN on a loaded 2-core machine;
  hanging or failing on Gloo's 30 s start-up deadline): XLA:CPU's cache key
  includes the topology of the calling process's own devices only (jaxlib
  0.10.2 and 0.12.1), so each process has keys of its own, and JAX writes
  entries from process 0 only. Process 0 then loads every program while
  the others compile it, on every run. Without the cache all compile alike;
  the run's wall time is the same, since a collective waits for the last
  process anyway. (On jaxlib 0.12.1 a psum between a loaded and a compiled
  executable also deadlocked.) GPUs and TPUs share their keys across
  processes and keep the cache.

  Returns:
    Whether it was on and is now off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if (jax.process_count() == 1 or jax.default_backend() != "cpu"
      or not jax.config.jax_enable_compilation_cache
      or not jax.config.jax_compilation_cache_dir):
    return False
  jax.config.update("jax_enable_compilation_cache", False)
  logging.info("Compilation cache off: %d CPU processes (XLA:CPU's cache "
               "entries are per process, and JAX writes process 0's only: "
               "it would load while the others compile, and arrive at each "
               "collective long before them).", jax.process_count())
  return True
