r"""Scores a trained FCN on an evaluation split: metrics table, JSON, plot.

  python -m fcn_jax.evaluate --checkpoint DIR --split seg11valid [--output DIR]

Runs one pass over the split with :mod:`fcn_jax.input_pipeline` (exact mode by
default: native size, one image per batch, as ``score.py`` does; or padded to
``--eval-pad-size`` squared), sums one confusion matrix over every image, and
from it prints the four FCN metrics (FCN_SPEC.md §7) and a per-class IU table,
and writes ``metrics.json`` and ``confusion.png`` (row-normalised) under
``--output``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fcn_jax import logging_utils, train, visualize, voc

METRIC_NAMES = (("pixel_acc", "pixel accuracy"), ("mean_acc", "mean accuracy"),
                ("mean_iu", "mean IU"), ("fw_iu", "f.w. IU"))


def score_split(config: Any, model: Any, params: Any, batches: Iterable[Any],
                class_names: Sequence[str], flip: bool = False,
                progress: bool = False) -> tuple[dict[str, Any], np.ndarray]:
  """Scores every batch with the training code's evaluation.

  The same data-parallel step and confusion-matrix sum as evaluation during
  training (:func:`fcn_jax.train.evaluate`): padded examples and pixels
  labelled 255 never count, and the metrics come once from the summed matrix.

  Args:
    config: Reads ``eval_batch_size`` and ``optim.loss_normalization``.
    model: The FCN.
    params: Its parameters.
    batches: One pass over the split (``image``, ``label``, ``valid``).
    class_names: Names for the per-class results.
    flip: Average with the logits of the flipped images.
    progress: Show a progress bar.

  Returns:
    ``(results, hist)``: the metrics of :func:`fcn_jax.train.evaluate` and the
    confusion matrix ``[C, C]`` (rows = ground truth).
  """
  p_eval_step, devices = train.make_eval_fn(model, config, flip=flip)
  results, _ = train.evaluate(
      p_eval_step, devices, params,
      logging_utils.track(batches, "batches", "evaluating", progress),
      num_classes=model.num_classes, class_names=class_names)
  return results, np.asarray(results["confusion_matrix"], np.int64)


def _percent(value: float) -> str:
  return "   -  " if math.isnan(value) else f"{100 * value:6.2f}"


def format_report(results: Mapping[str, Any], hist: np.ndarray,
                  class_names: Sequence[str]) -> str:
  """The four metrics and a per-class table (IU, accuracy, pixel share)."""
  lines = [f"{label:>15}: {_percent(results[key])}"
           for key, label in METRIC_NAMES]
  gt_total = hist.sum(1)
  with np.errstate(divide="ignore", invalid="ignore"):
    accuracy = np.diag(hist) / gt_total
  share = gt_total / max(1, hist.sum())
  per_class = results["per_class_iu"]
  lines += ["", f"{'class':<14} {'IU':>6} {'acc':>6} {'GT px %':>8}"]
  for k, name in enumerate(class_names):
    iu = per_class[name] if isinstance(per_class, dict) else per_class[k]
    lines.append(f"{name:<14} {_percent(iu)} {_percent(accuracy[k])} "
                 f"{100 * share[k]:8.2f}")
  return "\n".join(lines)


def write_results(output_dir: str | os.PathLike, results: Mapping[str, Any],
                  hist: np.ndarray, class_names: Sequence[str],
                  extra: Mapping[str, Any] | None = None) -> None:
  """Writes ``metrics.json`` (NaN as null) and ``confusion.png``."""
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v
  per_class = results["per_class_iu"]
  if not isinstance(per_class, dict):
    per_class = dict(zip(class_names, per_class))
  content = {key: clean(results[key]) for key, _ in METRIC_NAMES}
  content["per_class_iu"] = {k: clean(v) for k, v in per_class.items()}
  content["confusion_matrix"] = np.asarray(hist).tolist()
  content["class_names"] = list(class_names)
  content.update(extra or {})
  with open(output_dir / "metrics.json", "w") as f:
    json.dump(content, f, indent=2)
  title = (f"mean IU {_percent(results['mean_iu']).strip()}%, "
           f"pixel acc. {_percent(results['pixel_acc']).strip()}%")
  visualize.confusion_matrix_image(hist, class_names, title=title).save(
      output_dir / "confusion.png")


def load_config(path: str | None):
  """A config from a ``get_config()`` file, or the project defaults."""
  if not path:
    from fcn_jax import default_config  # pylint: disable=g-import-not-at-top
    return default_config.get_config()
  spec = importlib.util.spec_from_file_location("_fcn_eval_config", path)
  if spec is None or not os.path.isfile(path):
    raise SystemExit(f"error: config file {path} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m fcn_jax.evaluate",
      description="Score a trained FCN on an evaluation split.")
  parser.add_argument("--checkpoint", required=True,
                      help="training workdir, checkpoint dir or weights "
                      "export dir.")
  parser.add_argument("--config", default="",
                      help="config file with get_config() (default: "
                      "fcn_jax.default_config); its dataset and input fields "
                      "are used.")
  parser.add_argument("--dataset", default=None,
                      help="dataset name (config.dataset.name), e.g. voc_seg "
                      "or synthetic_shapes.")
  parser.add_argument("--split", default=None,
                      help="split to score (config.dataset.eval_split), e.g. "
                      "seg11valid.")
  parser.add_argument("--data-dir", default=None,
                      help="TFDS data dir (config.dataset.data_dir).")
  parser.add_argument("--eval-pad-size", type=int, default=None,
                      help="0: exact (native size, batch 1); S: pad to SxS and "
                      "batch (config.input.eval_pad_size).")
  parser.add_argument("--batch-size", type=int, default=None,
                      help="eval batch (config.eval_batch_size); needs "
                      "--eval-pad-size > 0 when above 1.")
  parser.add_argument("--flip", action="store_true",
                      help="average with horizontally flipped logits.")
  parser.add_argument("--output", default=None,
                      help="folder for metrics.json and confusion.png "
                      "(default: eval_<dataset>_<split>).")
  parser.add_argument("--no-progress", action="store_true")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    return evaluate_checkpoint(args)
  except (OSError, ValueError) as e:  # Missing data or checkpoint, bad config.
    print(f"error: {e}", file=sys.stderr)
    return 2


def evaluate_checkpoint(args: argparse.Namespace) -> int:
  """Runs the evaluation the command-line ``args`` describe."""
  # pylint: disable-next=g-import-not-at-top
  from fcn_jax import input_pipeline, predict
  config = load_config(args.config)
  overrides = {("dataset", "name"): args.dataset,
               ("dataset", "eval_split"): args.split,
               ("dataset", "data_dir"): args.data_dir,
               ("input", "eval_pad_size"): args.eval_pad_size,
               (None, "eval_batch_size"): args.batch_size}
  for (group, field), value in overrides.items():
    if value is not None:
      setattr(config[group] if group else config, field, value)
  model, variables, preprocessing, _ = predict.load_bundle(
      args.checkpoint)
  num_classes = model.num_classes
  class_names = voc.class_names(num_classes)
  start = time.time()
  batches = input_pipeline.create_eval_iterator(config, preprocessing)
  results, hist = score_split(config, model, variables["params"], batches,
                              class_names, flip=args.flip,
                              progress=not args.no_progress)
  num_images = results["num_images"]
  split = f"{config.dataset.name}/{config.dataset.eval_split}"
  print(f"{split}: {num_images} images, {int(hist.sum())} scored pixels, "
        f"{time.time() - start:.1f} s")
  print(format_report(results, hist, class_names))
  output = args.output or (f"eval_{config.dataset.name}_"
                           f"{config.dataset.eval_split}").replace("/", "_")
  write_results(output, results, hist, class_names, extra={
      "checkpoint": str(args.checkpoint), "dataset": config.dataset.name,
      "split": config.dataset.eval_split, "num_images": num_images,
      "eval_pad_size": config.input.eval_pad_size, "flip": args.flip})
  print(f"Wrote {output}/metrics.json and {output}/confusion.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
