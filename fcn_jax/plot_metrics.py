r"""Training curves from ``metrics.jsonl``: loss, learning rate, validation.

  python -m fcn_jax.plot_metrics runs/quickstart [runs/other ...] \
      [--output curves.png] [--labels quickstart,other]

Draws, against the step, the training loss and learning rate and the four
validation metrics (pixel accuracy, mean accuracy, mean IU, frequency
weighted IU, in percent) that training writes to ``WORKDIR/metrics.jsonl``
(see :mod:`fcn_jax.logging_utils`), one colour per run, several runs
overlaid. A run resumed after a stop writes some steps twice; the later line
wins. The PNG goes to ``--output`` (default ``WORKDIR/metrics.png`` for one
run, ``metrics.png`` for several). Figures are drawn with matplotlib's Agg
renderer (a ``Figure`` without pyplot), so no display is needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Sequence

from absl import flags
import matplotlib
from matplotlib import figure as figure_lib

from fcn_jax import cli
from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax.evaluation import metrics

TRAIN_PANELS = (("loss", "training loss"), ("learning_rate", "learning rate"))
EVAL_PANELS = tuple((key, f"validation {title}")
                    for key, title in metrics.SUMMARY_METRICS)

Series = tuple[list[int], list[float]]


@dataclasses.dataclass(frozen=True)
class RunMetrics:
  """The scalar curves of one run.

  Attributes:
    label: The run's name in the legend.
    train: Training scalar name -> ``(steps, values)``, by step.
    eval: Evaluation scalar name -> ``(steps, values)``, by step.
  """

  label: str
  train: dict[str, Series]
  eval: dict[str, Series]


def metrics_file(path: str) -> str:
  """``path`` itself if it is a file, else ``path/metrics.jsonl``."""
  return (path if os.path.isfile(path)
          else os.path.join(path, logging_utils.METRICS_FILE))


def load_run(path: str, label: str | None = None) -> RunMetrics:
  """Reads one run's ``metrics.jsonl``.

  Args:
    path: A workdir or its ``metrics.jsonl``.
    label: The legend name; default the workdir's name.

  Returns:
    The run's curves; for each ``(split, step)`` the last line wins.

  Raises:
    FileNotFoundError: No ``metrics.jsonl``.
    ValueError: A line that is not a JSON object with ``step`` and
      ``split`` (a cut-off last line is skipped instead).
  """
  file = metrics_file(path)
  if not os.path.isfile(file):
    raise FileNotFoundError(
        f"{file} does not exist: give a training workdir (python -m "
        "fcn_jax.main --workdir ...) or its metrics.jsonl")
  try:
    with open(file, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise errors.UserError(f"{file} is not a metrics.jsonl (not UTF-8 text: "
                           f"{e.reason} at byte {e.start})") from None
  records: dict[tuple[str, int], dict] = {}
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      key = (str(record["split"]), int(record["step"]))
    except (ValueError, KeyError, TypeError) as e:
      if number == len(lines):  # A write cut off by a crash.
        print(f"warning: {file}:{number} is incomplete; skipped",
              file=sys.stderr)
        continue
      raise errors.UserError(f"{file}:{number} is not a metrics record with "
                             f"'step' and 'split' ({e})") from None
    records[key] = {**records.get(key, {}), **record}
  by_split: dict[str, dict[str, Series]] = {"train": {}, "eval": {}}
  for (split, step), record in sorted(records.items(),
                                      key=lambda kv: kv[0][1]):
    if split not in by_split:
      continue
    for name, value in record.items():
      if (name in ("step", "time") or isinstance(value, bool)
          or not isinstance(value, (int, float)) or not math.isfinite(value)):
        continue
      steps, values = by_split[split].setdefault(name, ([], []))
      steps.append(step)
      values.append(float(value))
  label = label or os.path.basename(
      os.path.normpath(os.path.dirname(file) if os.path.isfile(path) else path))
  return RunMetrics(label, by_split["train"], by_split["eval"])


def _uses_log_scale(values: Sequence[float]) -> bool:
  positive = [v for v in values if v > 0]
  return (len(positive) == len(values) and len(values) > 1
          and max(positive) / min(positive) > 20)


def plot_runs(runs: Sequence[RunMetrics]) -> figure_lib.Figure:
  """One panel per curve (loss, learning rate, four validation metrics),
  every run overlaid in its own colour.

  Validation metrics are in percent; the loss and learning rate use a log
  axis when they span more than a factor of 20.
  """
  panels = [("train", key, title, 1.0) for key, title in TRAIN_PANELS]
  panels += [("eval", key, title, 100.0) for key, title in EVAL_PANELS]
  fig = figure_lib.Figure(figsize=(13, 7), layout="constrained")
  axes = fig.subplots(2, 3).reshape(-1)
  colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (split, key, title, factor) in zip(axes, panels):
    all_values = []
    for index, run in enumerate(runs):
      steps, values = getattr(run, split).get(key, ([], []))
      if not steps:
        continue
      values = [v * factor for v in values]
      all_values += values
      ax.plot(steps, values, label=run.label,
              color=colours[index % len(colours)],
              marker="o" if split == "eval" else None, markersize=3)
    ax.set_title(title + (" (%)" if factor != 1.0 else ""))
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if not all_values:
      ax.text(0.5, 0.5, "no data", ha="center", va="center",
              transform=ax.transAxes, color="grey")
    elif split == "train" and _uses_log_scale(all_values):
      ax.set_yscale("log")
  handles, labels = axes[0].get_legend_handles_labels()
  for ax in axes[1:]:
    if not handles:
      handles, labels = ax.get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc="outside upper center",
               ncol=min(len(labels), 6))
  return fig


FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "output", None,
    "PNG to write (default WORKDIR/metrics.png for one run, updated in "
    "place; metrics.png for several). A picture outside the workdir is not "
    "replaced without --overwrite.", flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.",
                     flag_values=FLAGS)
flags.DEFINE_string(
    "labels", None, "Comma-separated legend names, one per WORKDIR "
    "(default: the workdirs' names).", flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class _Args:
  workdirs: list[str]
  output: str | None
  overwrite: bool
  labels: str | None


def main(argv: Sequence[str] | None = None) -> int:
  workdirs = cli.parse_command(
      FLAGS, sys.argv[1:] if argv is None else argv,
      prog="python -m fcn_jax.plot_metrics", doc=__doc__,
      positional="WORKDIR")
  args = _Args(workdirs, FLAGS.output, FLAGS.overwrite, FLAGS.labels)
  return cli.exit_code(_main, args)


def _main(args: _Args) -> int:
  labels: Sequence[str | None] = [None] * len(args.workdirs)
  if args.labels is not None:
    labels = args.labels.split(",")
    if len(labels) != len(args.workdirs):
      raise errors.UserError(f"--labels has {len(labels)} names for "
                             f"{len(args.workdirs)} workdirs")
  runs = [load_run(path, label)
          for path, label in zip(args.workdirs, labels)]
  output = args.output or (
      os.path.join(os.path.dirname(metrics_file(args.workdirs[0])),
                   "metrics.png") if len(runs) == 1 else "metrics.png")
  if args.output or len(runs) > 1:  # Not a workdir's own metrics.png.
    cli.check_overwrite([output], args.overwrite)
  fig = plot_runs(runs)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fig.savefig(output, dpi=100)
  summary = ", ".join(
      f"{run.label}: {len(run.train.get('loss', ([], []))[0])} train / "
      f"{len(run.eval.get('mean_iu', ([], []))[0])} eval points"
      for run in runs)
  print(f"wrote {output} ({summary})")
  return 0


if __name__ == "__main__":
  cli.run_main(main)
