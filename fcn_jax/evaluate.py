r"""Scores a trained FCN on an evaluation split.

  python -m fcn_jax.evaluate --checkpoint DIR [--split seg11valid] \
      [--step best|latest|N] [--config configs/voc_fcn8s.py] [--output DIR]

The same evaluation as ``python -m fcn_jax.main --config.mode=eval`` and as
during training (:func:`fcn_jax.evaluation.evaluator.evaluate_checkpoint`): one pass over the
split with :mod:`fcn_jax.data.input_pipeline` (exact by default: the native-size
results of ``score.py``, at a few masked shape buckets and batched, see
:mod:`fcn_jax.data.buckets`; or padded to ``--eval-pad-size`` squared without
masking and batched), one confusion matrix summed over every image, and from it the four
FCN metrics (docs/reference.md §7) and a per-class table, printed and written
with the matrix to ``eval_results.json`` and ``confusion.png`` under
``--output``. The checkpoint's own metadata rebuilds the model and gives the
preprocessing; ``--config`` (default: ``fcn_jax/default_config.py``) and
``--config.<field>=...`` give everything else, the flags below being
shortcuts for the common fields.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax.evaluation import metrics
from fcn_jax.evaluation import evaluator
from fcn_jax.inference import tta

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "default_config.py")

config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file (configs/*.py) for the dataset, input, batch and test-time "
    "augmentation; default: fcn_jax/default_config.py (VOC seg11valid, "
    "exact).", lock_config=True)
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
    "data-dir", None, "TFDS data dir (config.dataset.data_dir).")
_EVAL_PAD_SIZE = flags.DEFINE_integer(
    "eval-pad-size", None, "0: exact (native-size results, at shape buckets "
    "with config.input.buckets); S: pad to SxS without masking "
    "(config.input.eval_pad_size).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch-size", None, "Eval batch (config.eval_batch_size); above 1 needs "
    "shape buckets (the default) or --eval-pad-size > 0.")
_FLIP = flags.DEFINE_boolean(
    "flip", None, "Average with the horizontally flipped logits "
    "(config.tta.flip).")
_SCALES = flags.DEFINE_string(
    "scales", None, "Comma-separated test-time scales whose logits are "
    "averaged, e.g. 0.75,1.0,1.25 (config.tta.scales).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Folder for eval_results.json and confusion.png "
    "(default: eval_<dataset>_<split>).")
_NO_PROGRESS = flags.DEFINE_boolean("no-progress", False, "No progress bar.")


def _apply_shortcuts(config) -> None:
  shortcuts = {("dataset", "name"): _DATASET.value,
               ("dataset", "eval_split"): _SPLIT.value,
               ("dataset", "data_dir"): _DATA_DIR.value,
               ("input", "eval_pad_size"): _EVAL_PAD_SIZE.value,
               (None, "eval_batch_size"): _BATCH_SIZE.value,
               ("tta", "flip"): _FLIP.value}
  for (group, field), value in shortcuts.items():
    if value is not None:
      setattr(config[group] if group else config, field, value)
  if _SCALES.value is not None:
    config.tta.scales = cli.run_reporting_errors(
        lambda: tta.from_flags(scales=_SCALES.value).scales)


def main(argv: list[str]) -> None:
  cli.check_no_arguments(argv)
  config = cli.loaded_config()
  _apply_shortcuts(config)
  cli.start(cli.XLA_CPU_FLAGS.value,
            compilation_cache_dir=config.get("compilation_cache_dir"))
  output = _OUTPUT.value or (f"eval_{config.dataset.name}_"
                             f"{config.dataset.eval_split}").replace("/", "_")
  start = time.time()
  report = cli.run_reporting_errors(
      evaluator.evaluate_checkpoint, config, _CHECKPOINT.value,
      step=cli.run_reporting_errors(checkpointing.parse_step, _STEP.value),
      output_dir=output, progress=not _NO_PROGRESS.value)
  results = report["metrics"]
  step = (f"step {report['step']} ({report['step_reason']})"
          if report["step"] is not None else "weights export")
  print(f"{report['checkpoint']}: {step}")
  print(f"{report['dataset']}/{report['split']}: {results['num_images']} "
        f"images, {sum(map(sum, results['confusion_matrix']))} scored "
        f"pixels, {time.time() - start:.1f} s")
  print(metrics.format_report(results, report["class_names"]))
  print(f"Wrote {output}/{evaluator.EVAL_RESULTS_FILE} and "
        f"{output}/{evaluator.CONFUSION_FILE}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
