r"""Trains and/or evaluates an FCN: the command-line entry point.

  python -m fcn_jax.main --config configs/voc_fcn32s.py --workdir runs/voc_fcn32s
  python -m fcn_jax.main --config configs/quickstart.py --workdir runs/qs \
      --config.num_train_steps=100 --config.mode=train

``--config`` is an ml_collections config file (``configs/*.py``); any field can
be overridden with ``--config.<field>=<value>`` and unknown fields are errors.
``config.mode`` picks train, eval or train_and_eval. Re-running the same
command resumes from the workdir's latest checkpoint (also after a SIGTERM,
which saves a checkpoint and exits 0). ``--config.mode=eval`` evaluates the
checkpoint ``--step`` picks (``best`` by mean IU by default, as
``python -m fcn_jax.evaluate``). On CPUs it sets the XLA:CPU flags of
:mod:`fcn_jax.xla_flags` before JAX starts (faster convolutions;
``--xla_cpu_flags=default`` or ``FCN_JAX_XLA_CPU_FLAGS=default`` keeps
XLA's defaults). Multi-process runs are configured from the
environment (see ``launch/README.md``). The logic lives in
:mod:`fcn_jax.training.loop`; this file only parses flags and starts up
(:func:`fcn_jax.cli.start`).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax.training import loop

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
_STEP = flags.DEFINE_string(
    "step", checkpointing.DEFAULT_STEP,
    "With --config.mode=eval: which checkpoint of the workdir to evaluate: "
    "best (by mean IU; the latest if none was evaluated), latest, or a step "
    "number. Training always resumes from the latest.")
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)


def main(argv: list[str]) -> None:
  cli.check_no_arguments(argv)
  config = cli.loaded_config()
  step = cli.run_reporting_errors(checkpointing.parse_step, _STEP.value)
  cli.start(cli.XLA_CPU_FLAGS.value,
            compilation_cache_dir=config.get("compilation_cache_dir"))
  cli.run_reporting_errors(loop.run, config, _WORKDIR.value, step)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run_main(main, flags_parser=cli.parse_flags,
               interrupted="the checkpoints saved before are kept; the same "
               "command resumes from the last one")
