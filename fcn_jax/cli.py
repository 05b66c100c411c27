"""Plumbing shared by the absl command-line entry points (``fcn_jax.main``,
``fcn_jax.evaluate``): ml_collections config flags, and bad input reported
as one line naming the problem and the fix instead of a traceback (which
``--verbosity=1`` shows).
"""

from __future__ import annotations

import re
import sys
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


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (an unknown config field named)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull "
          "to see help on flags.", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    named = [o for o in overrides
             if re.search(rf"\b{re.escape(o.rsplit('.', 1)[-1])}\b", str(e))]
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
