r"""Trains and/or evaluates an FCN: the command-line entry point.

  python -m fcn_jax.main --config configs/voc_fcn32s.py --workdir runs/voc_fcn32s
  python -m fcn_jax.main --config configs/quickstart.py --workdir runs/qs \
      --config.num_train_steps=100 --config.mode=train

``--config`` is an ml_collections config file (``configs/*.py``); any field can
be overridden with ``--config.<field>=<value>`` and unknown fields are errors.
``config.mode`` picks train, eval or train_and_eval. Re-running the same
command resumes from the workdir's latest checkpoint (also after a SIGTERM,
which saves a checkpoint and exits 0). Multi-process runs are configured from
the environment (see ``launch/README.md``). The logic lives in
:mod:`fcn_jax.train`; this file only parses flags.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from fcn_jax import distributed
from fcn_jax import logging_utils
from fcn_jax import train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected command-line arguments: {argv[1:]}")
  config = flags.FLAGS.config
  try:
    config.get("mode")  # A config file that failed to load raises here.
  except OSError as e:
    sys.exit(f"error: cannot load the config file: {e.__cause__ or e}")
  logging_utils.quiet_library_logs()
  # Before anything touches a device; a no-op on one host (see launch/).
  distributed.maybe_initialize()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    train.run(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    # Bad input (config, data, weights) or a diverged run: the message names
    # the file or field and the fix; the traceback is for --verbosity=1.
    logging.debug("Traceback:", exc_info=True)
    sys.exit(f"error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error for an unknown config field."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull "
             "to see help on flags.")
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    sys.exit(f"error: unknown config field ({e}) in {' '.join(overrides)}; "
             "every field, with its meaning, is in fcn_jax/default_config.py")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
