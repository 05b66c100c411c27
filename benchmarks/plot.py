r"""Plots images/s against batch size from the benchmarks' JSON files.

One panel per kind (inference, training) and device, merging the rows of files
of the same kind (e.g. one file per dtype); one line per implementation
(fcn_jax, PyTorch eager, PyTorch best) and per (model, size, dtype, upsample)
series. Drawn with matplotlib on an Agg canvas (no pyplot, no display).

  python benchmarks/plot.py benchmarks/results/cpu_inference.json \
      benchmarks/results/cpu_train.json --output docs/throughput_cpu.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from matplotlib import axes as mpl_axes
from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg

# Matplotlib's default (tab10) blue, red and orange, one per implementation.
RUNNER_COLORS = {"fcn_jax": "tab:blue", "torch_eager": "tab:red",
                 "torch_best": "tab:orange"}
RUNNER_NAMES = {"fcn_jax": "fcn_jax", "torch_eager": "PyTorch eager fp32",
                "torch_best": "PyTorch best"}
# One line style and marker per series of the same implementation.
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
PANEL_SIZE = (6.2, 4.0)  # Inches (at 100 dpi), one panel without its legend.
DPI = 100


def series(results: dict[str, Any]
           ) -> dict[tuple[str, str], list[tuple[int, float]]]:
  """``{(series label, runner): [(batch, img/s), ...]}`` from one JSON.

  A row's upsample mode is fcn_jax's: PyTorch eager (float32, dense) and
  PyTorch best (its own settings) leave it out of their labels, eager the
  dtype too, and rows that measured the same thing are averaged.
  """
  values: dict[tuple[str, str], dict[int, list[float]]] = {}
  for row in results["rows"]:
    label = f"{row['model']} {row['size']}px"
    for runner, result in row["runners"].items():
      if runner == "torch_eager":
        key = (label, runner)
      elif runner == "torch_best":
        key = (f"{label} {row['dtype']}", runner)
      else:
        key = (f"{label} {row['dtype']} {row['upsample']}", runner)
      values.setdefault(key, {}).setdefault(row["batch"], []).append(
          result["images_per_second"])
  return {key: sorted((b, sum(v) / len(v)) for b, v in points.items())
          for key, points in values.items()}


def draw_panel(axes: mpl_axes.Axes, results: dict[str, Any]) -> None:
  """One chart on ``axes``: img/s (linear, from 0) against batch size (log 2).
  """
  lines = series(results)
  env = results["environment"]
  labels_of: dict[str, list[str]] = {}
  for label, runner in sorted(lines):
    labels_of.setdefault(runner, []).append(label)
  for (label, runner), points in sorted(lines.items()):
    batches, values = zip(*points)
    index = labels_of[runner].index(label)
    axes.plot(batches, values, linestyle=LINE_STYLES[index % len(LINE_STYLES)],
              marker=MARKERS[index % len(MARKERS)], linewidth=2,
              color=RUNNER_COLORS.get(runner, "tab:gray"),
              label=f"{RUNNER_NAMES.get(runner, runner)}: {label}")
  batches = sorted({b for points in lines.values() for b, _ in points})
  axes.set_xscale("log", base=2)
  axes.xaxis.set_major_locator(ticker.FixedLocator(batches))
  axes.xaxis.set_major_formatter(ticker.FixedFormatter(
      [str(b) for b in batches]))
  axes.xaxis.set_minor_locator(ticker.NullLocator())
  if len(batches) == 1:  # A single batch size: centre it.
    axes.set_xlim(batches[0] / 2, batches[0] * 2)
  axes.set_ylim(bottom=0, top=1.1 * max(v for points in lines.values()
                                        for _, v in points))
  axes.grid(axis="y", color="0.88")
  axes.set_axisbelow(True)
  axes.set_xlabel("batch size")
  axes.set_ylabel("images/s")
  axes.set_title(f"{results['kind']}: {env['device']}\n"
                 f"jax {env['jax']}, torch {env['torch']}, "
                 f"{env['date'][:10]}", loc="left", fontsize=10)
  axes.legend(loc="upper left", bbox_to_anchor=(0, -0.14), frameon=False,
              fontsize=9, handlelength=3)


def merge_by_kind(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """Joins the rows of result sets of the same kind on the same device."""
  merged: dict[tuple[str, str], dict[str, Any]] = {}
  for result in results:
    key = (result["kind"], result["environment"]["device"])
    if key in merged:
      merged[key]["rows"] = merged[key]["rows"] + result["rows"]
    else:
      merged[key] = dict(result)
  return list(merged.values())


def plot(results: Iterable[dict[str, Any]], output: Path) -> Path:
  """Draws one panel per kind and device side by side and saves a PNG."""
  merged = merge_by_kind(results)
  if not merged:
    raise ValueError("no benchmark results to plot")
  figure = mpl_figure.Figure(
      figsize=(PANEL_SIZE[0] * len(merged), PANEL_SIZE[1]), dpi=DPI)
  backend_agg.FigureCanvasAgg(figure)
  for axes, result in zip(figure.subplots(1, len(merged), squeeze=False)[0],
                          merged):
    draw_panel(axes, result)
  output.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(output, format="png", bbox_inches="tight", pad_inches=0.15,
                 facecolor="white", pil_kwargs={"optimize": True})
  return output


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("results", nargs="+", help="benchmark JSON files")
  parser.add_argument("--output", required=True, help="PNG path")
  args = parser.parse_args(argv)
  loaded = [json.loads(Path(p).read_text()) for p in args.results]
  print(f"wrote {plot(loaded, Path(args.output))}")


if __name__ == "__main__":
  main()
