"""Plumbing shared by the absl command-line entry points (``fcn_jax.main``,
``fcn_jax.evaluate``): ml_collections config flags, and bad input reported
as one line naming the problem and the fix instead of a traceback (which
``--verbosity=1`` shows).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging

# Errors that mean bad input (a config value, a missing file or dataset, a
# checkpoint of another model) or a diverged run, not a bug.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
USAGE_EXIT_CODE = 2


def fail(message: str) -> None:
  """Prints ``error: message`` on stderr and exits with status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT_CODE)


def _config_file(argv: Sequence[str]) -> str | None:
  """The ``--config`` file named on the command line, if any."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _line_in(error: BaseException, path: str | None) -> int | None:
  """The line of ``path`` where ``error`` was raised (its last frame there)."""
  if not path:
    return None
  path = os.path.abspath(path)
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == path]
  return lines[-1] if lines else None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors: a bad flag, the unknown config
  field among the overrides, or a config file that does not load."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull "
          "to see help on flags.", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  except SyntaxError as e:
    fail(f"the config file {e.filename} has a syntax error at line "
         f"{e.lineno}: {e.msg}")
  except Exception as e:  # pylint: disable=broad-except
    config_file = _config_file(argv)
    line = _line_in(e, config_file)
    if line is not None:  # Raised by the config file's own code.
      fail(f"the config file {config_file} fails at line {line}: "
           f"{type(e).__name__}: {e}")
    if not isinstance(e, (AttributeError, KeyError)):
      raise
    missing = str(e.args[0] if e.args else e).strip("'\"")
    missing = re.findall(r"'([^']+)'", missing)[-1:] or [missing]
    overrides = [a.split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    named = [o for o in overrides if missing[0] in o.split(".")[1:]]
    fail(f"unknown config field {' '.join(named or overrides)} ({e}); every "
         "field, with its meaning, is in fcn_jax/default_config.py")
  return []  # Unreachable.


def loaded_config(flag_name: str = "config") -> Any:
  """The value of a config-file flag, failing in one line if the file did
  not load (absl loads it lazily)."""
  config = flags.FLAGS[flag_name].value
  try:
    config.get("mode")  # A config file that failed to load raises here.
  except OSError as e:
    fail(f"cannot load the config file: {e.__cause__ or e}")
  except SyntaxError as e:
    fail(f"the config file {e.filename} has a syntax error at line "
         f"{e.lineno}: {e.msg}")
  return config


def check_no_arguments(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    fail(f"Unexpected command-line arguments: {list(argv[1:])}")


def run_reporting_errors(fn: Callable[..., Any], *args: Any,
                         **kwargs: Any) -> Any:
  """Runs ``fn``; bad input ends the process with one line, no traceback."""
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    logging.debug("Traceback:", exc_info=True)
    fail(str(e))
