r"""Scores a trained FCN on an evaluation split.

  python -m fcn_jax.evaluate --checkpoint WORKDIR [--split val] \
      [--step best|latest|N] [--config configs/voc_fcn8s.py] [--output DIR]

The same evaluation as ``python -m fcn_jax.main --config.mode=eval`` and as
during training (:func:`fcn_jax.evaluation.evaluator.evaluate_checkpoint`): one
pass over the split with :mod:`fcn_jax.data.input_pipeline` (exact by
default: the native-size results of ``score.py`` at a few masked shape
buckets, batched, see :mod:`fcn_jax.data.buckets`), one confusion
matrix summed over every image, and from it the four FCN metrics
(docs/reference.md §7) and a per-class table, printed and written with the
matrix to ``eval_results.json`` and ``confusion.png``.

On a training workdir (or one of its step directories) the run's own config
(``WORKDIR/config.json``) gives the dataset, data dir, split, input
(``eval_pad_size``), evaluation batch and test-time augmentation, so the
same checkpoint and split give the numbers training logged; the command
prints where each setting came from. ``--config FILE`` replaces the run's
config, and the flags below and ``--config.<field>=...`` override single
fields. Without a workdir (a weights export) the defaults are
``fcn_jax/default_config.py`` (VOC seg11valid, exact). The checkpoint's own
metadata rebuilds the model and gives the preprocessing.

The reports go into the workdir (``eval_results.json`` and
``confusion.png`` are its own, updated in place) or into ``--output``
(which, like every output you name, is not replaced without
``--overwrite``); for a weights export without ``--output`` nothing is
written.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax import logging_utils
from fcn_jax import run_config
from fcn_jax.evaluation import metrics
from fcn_jax.evaluation import evaluator
from fcn_jax.inference import tta
from fcn_jax.training import workdir_lock

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "default_config.py")

config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file (configs/*.py) for the dataset, input, batch and test-time "
    "augmentation; default: the workdir's config.json, else "
    "fcn_jax/default_config.py (VOC seg11valid, exact).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training workdir, checkpoint step directory or "
    "weights export directory.", required=True)
_STEP = flags.DEFINE_string(
    "step", checkpointing.DEFAULT_STEP,
    "Which checkpoint of a workdir: best (by mean IU; the latest if none was "
    "evaluated), latest, or a step number.")
_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset (config.dataset.name), e.g. voc_seg.")
_SPLIT = flags.DEFINE_string(
    "split", None, "Split to score (config.dataset.eval_split), e.g. "
    "seg11valid.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir (config.dataset.data_dir).")
_EVAL_PAD_SIZE = flags.DEFINE_integer(
    "eval_pad_size", None, "0: exact (native-size results, at shape buckets "
    "with config.input.buckets); S: pad to SxS without masking "
    "(config.input.eval_pad_size).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Eval batch (config.eval_batch_size); above 1 needs "
    "shape buckets (the default) or --eval_pad_size > 0.")
_FLIP = flags.DEFINE_boolean(
    "flip", None, "Average with the horizontally flipped logits "
    "(config.tta.flip).")
_SCALES = flags.DEFINE_string(
    "scales", None, "Comma-separated test-time scales whose logits are "
    "averaged, e.g. 0.75,1.0,1.25 (config.tta.scales).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Folder for eval_results.json and confusion.png "
    "(default: the workdir; for a weights export, nowhere).")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace an --output folder's eval_results.json and "
    "confusion.png.")
_PROGRESS = flags.DEFINE_boolean(
    "progress", True, "Show a progress bar (--no_progress: none).")

# Old spellings, accepted but not shown (hyphenated ones are mapped by
# cli.parse_flags itself).
ALIASES = {"--no_progress": "--noprogress", "--no-progress": "--noprogress"}

# The settings that decide the numbers, reported with their origin:
# (config field, its shortcut flag).
_REPORTED = (("dataset.name", "--dataset"), ("dataset.data_dir", "--data_dir"),
             ("dataset.eval_split", "--split"),
             ("input.eval_pad_size", "--eval_pad_size"),
             ("eval_batch_size", "--batch_size"), ("tta.flip", "--flip"),
             ("tta.scales", "--scales"))


def resolve_config(checkpoint: str):
  """The evaluation config and where each reported setting came from.

  Returns:
    ``(config, origins, workdir)``: ``origins`` maps each field of
    :data:`_REPORTED` to its source (a flag, the ``--config`` file, the
    workdir's config.json or the defaults); ``workdir`` is the checkpoint's
    training workdir, or None.
  """
  config_flag = flags.FLAGS["config"]
  config = cli.loaded_config()
  workdir = run_config.run_workdir(checkpoint)
  if config_flag.present:
    base = f"--config {config_flags.get_config_filename(config_flag)}"
  elif workdir is not None:
    config = run_config.saved_run_config(workdir)
    config.update_from_flattened_dict(
        config_flags.get_override_values(config_flag))
    base = os.path.join(workdir, run_config.CONFIG_FILE)
  else:
    base = "fcn_jax/default_config.py"
  overridden = config_flags.get_override_values(config_flag)
  shortcuts = {"dataset.name": _DATASET.value,
               "dataset.eval_split": _SPLIT.value,
               "dataset.data_dir": _DATA_DIR.value,
               "input.eval_pad_size": _EVAL_PAD_SIZE.value,
               "eval_batch_size": _BATCH_SIZE.value, "tta.flip": _FLIP.value}
  if _SCALES.value is not None:
    shortcuts["tta.scales"] = tta.from_flags(scales=_SCALES.value).scales
  for field, value in shortcuts.items():
    if value is not None:
      run_config.set_field(config, field, value)
  origins = {}
  for field, flag in _REPORTED:
    origins[field] = (flag if shortcuts.get(field) is not None else
                      f"--config.{field}" if field in overridden else base)
  return config, origins, workdir


def main(argv: list[str]) -> None:
  cli.check_no_arguments(argv)
  config, origins, workdir = cli.run_reporting_errors(
      resolve_config, _CHECKPOINT.value)
  cli.start(cli.XLA_CPU_FLAGS.value,
            compilation_cache_dir=config.get("compilation_cache_dir"))
  output = _OUTPUT.value or workdir
  if _OUTPUT.value:
    cli.run_reporting_errors(
        cli.check_overwrite,
        [os.path.join(output, evaluator.EVAL_RESULTS_FILE),
         os.path.join(output, evaluator.CONFUSION_FILE)], _OVERWRITE.value)
  for field, _ in _REPORTED:
    value = run_config.get_field(config, field)
    shown = ("(the TFDS default)" if field == "dataset.data_dir" and not value
             else value)
    print(f"  {field} = {shown}  [{origins[field]}]")
  start = time.time()
  logging_utils.quiet_async_errors()
  # Every check first: a config mistake never waits on the lock.
  run, loaded = cli.run_reporting_errors(
      evaluator.load_checkpoint, config, _CHECKPOINT.value,
      cli.run_reporting_errors(checkpointing.parse_step, _STEP.value))
  lock = None
  if workdir is not None and not _OUTPUT.value:  # Writing into its workdir.
    lock = cli.run_reporting_errors(workdir_lock.WorkdirLock(
        workdir, "an evaluation (python -m fcn_jax.evaluate)",
        if_held="pass --output DIR to write the report elsewhere").acquire)
  try:
    report = cli.run_reporting_errors(
        evaluator.evaluate_checkpoint, run, loaded, output_dir=output,
        progress=_PROGRESS.value)
  finally:
    if lock is not None:
      lock.release()
  results = report["metrics"]
  step = (f"step {report['step']} ({report['step_reason']})"
          if report["step"] is not None else "weights export")
  print(f"{report['checkpoint']}: {step}")
  print(f"{report['dataset']}/{report['split']}: {results['num_images']} "
        f"images, {sum(map(sum, results['confusion_matrix']))} scored "
        f"pixels, {time.time() - start:.1f} s")
  print(metrics.format_report(results, report["class_names"]))
  if output is None:
    print("Wrote nothing (a weights export has no workdir): pass --output "
          "DIR to save eval_results.json and confusion.png.")
  else:
    print(f"Wrote {os.path.join(output, evaluator.EVAL_RESULTS_FILE)} and "
          f"{os.path.join(output, evaluator.CONFUSION_FILE)}")


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, ALIASES))
