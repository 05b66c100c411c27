r"""Plots images/s against batch size from the benchmarks' JSON files.

One panel per kind (inference, training) and device, merging the rows of files
of the same kind (e.g. one file per dtype); one line per implementation
(fcn_jax, PyTorch eager, PyTorch best) and per (model, size, dtype, upsample)
series. Drawn with Pillow, so it needs no matplotlib.

  python benchmarks/plot.py benchmarks/results/cpu_inference.json \
      benchmarks/results/cpu_train.json --output docs/throughput_cpu.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Iterable

from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

RUNNER_COLORS = {"fcn_jax": (31, 119, 180), "torch_eager": (214, 39, 40),
                 "torch_best": (255, 127, 14)}
RUNNER_NAMES = {"fcn_jax": "fcn_jax", "torch_eager": "PyTorch eager fp32",
                "torch_best": "PyTorch best"}
DASHES = ((None), (10, 5), (3, 4), (12, 4, 3, 4))  # Solid, dashed, dotted...
PLOT_SIZE = (620, 400)  # One panel without its legend.
LEGEND_LINE = 17
MARGIN = dict(left=70, right=20, top=50, bottom=55)


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


def _nice_step(span: float, ticks: int = 5) -> float:
  raw = span / ticks
  magnitude = 10 ** math.floor(math.log10(raw))
  for factor in (1, 2, 2.5, 5, 10):
    if factor * magnitude >= raw:
      return factor * magnitude
  return 10 * magnitude


def _dashed_line(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]],
                 color, dash, width: int = 3) -> None:
  if dash is None:
    draw.line(points, fill=color, width=width, joint="curve")
    return
  pattern, index, remaining, on = list(dash), 0, dash[0], True
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    length = math.hypot(x1 - x0, y1 - y0)
    position = 0.0
    while position < length:
      step = min(remaining, length - position)
      if on:
        a, b = position / length, (position + step) / length
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                  fill=color, width=width)
      position += step
      remaining -= step
      if remaining <= 1e-9:
        index = (index + 1) % len(pattern)
        remaining, on = pattern[index], not on


def draw_panel(results: dict[str, Any]) -> Image.Image:
  """One chart: img/s (linear) against batch size (log 2)."""
  lines = series(results)
  width, height = PLOT_SIZE
  image = Image.new("RGB", (width, height + LEGEND_LINE * len(lines) + 10),
                    "white")
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=13)
  title_font = ImageFont.load_default(size=15)
  env = results["environment"]
  left, right = MARGIN["left"], width - MARGIN["right"]
  top, bottom = MARGIN["top"], height - MARGIN["bottom"]
  batches = sorted({b for points in lines.values() for b, _ in points})
  y_max = max(v for points in lines.values() for _, v in points)
  step = _nice_step(y_max * 1.1)
  y_top = step * math.ceil(y_max * 1.1 / step)
  log_min, log_max = math.log2(batches[0]), math.log2(batches[-1])
  x_of = lambda b: (left + (right - left) * (math.log2(b) - log_min)
                    / max(log_max - log_min, 1e-9) if log_max > log_min
                    else (left + right) / 2)
  y_of = lambda v: bottom - (bottom - top) * v / y_top

  title = f"{results['kind']}: {env['device']}"
  draw.text((left, 8), title, fill="black", font=title_font)
  draw.text((left, 27), f"jax {env['jax']}, torch {env['torch']}, "
            f"{env['date'][:10]}", fill=(90, 90, 90), font=font)
  for k in range(int(round(y_top / step)) + 1):  # Horizontal grid + labels.
    value = k * step
    y = y_of(value)
    draw.line([(left, y), (right, y)], fill=(225, 225, 225))
    text = f"{value:g}"
    draw.text((left - 8 - draw.textlength(text, font=font), y - 7), text,
              fill="black", font=font)
  for b in batches:
    x = x_of(b)
    draw.line([(x, bottom), (x, bottom + 5)], fill="black")
    draw.text((x - draw.textlength(str(b), font=font) / 2, bottom + 8),
              str(b), fill="black", font=font)
  draw.rectangle([left, top, right, bottom], outline="black")
  draw.text(((left + right) / 2 - 35, height - 22), "batch size",
            fill="black", font=font)
  draw.text((6, top - 18), "images/s", fill="black", font=font)

  labels_of = {}
  for label, runner in sorted(lines):
    labels_of.setdefault(runner, []).append(label)
  legend_y = height + 2
  for (label, runner), points in sorted(lines.items()):
    color = RUNNER_COLORS.get(runner, (80, 80, 80))
    dash = DASHES[labels_of[runner].index(label) % len(DASHES)]
    xy = [(x_of(b), y_of(v)) for b, v in points]
    if len(xy) > 1:
      _dashed_line(draw, xy, color, dash)
    for x, y in xy:
      draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
    _dashed_line(draw, [(left, legend_y + 7), (left + 30, legend_y + 7)],
                 color, dash)
    name = RUNNER_NAMES.get(runner, runner)
    draw.text((left + 36, legend_y), f"{name}: {label}", fill="black",
              font=font)
    legend_y += LEGEND_LINE
  return image


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
  panels = [draw_panel(r) for r in merge_by_kind(results)]
  canvas = Image.new("RGB", (sum(p.width for p in panels),
                             max(p.height for p in panels)), "white")
  x = 0
  for panel in panels:
    canvas.paste(panel, (x, 0))
    x += panel.width
  output.parent.mkdir(parents=True, exist_ok=True)
  canvas.save(output, optimize=True)
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
