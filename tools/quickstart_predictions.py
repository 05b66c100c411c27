r"""Draws the quickstart's figure: fcn_jax.predict on synthetic images.

  python tools/quickstart_predictions.py --workdir runs/quickstart

writes ``runs/quickstart/quickstart_predictions.jpg`` (``--output``; an
existing file is kept unless ``--overwrite``). The README's figure,
``docs/quickstart_predictions.jpg``, is tracked: redraw it on purpose with
``--output docs/quickstart_predictions.jpg --overwrite``.

Takes the first images of the ``synthetic_shapes`` validation split, runs
``python -m fcn_jax.predict`` (the real command) with the quickstart
checkpoint on them, and puts each ground truth (drawn by
:func:`fcn_jax.visualize.overlay`) above the overlay ``predict`` wrote.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

from PIL import Image
import tensorflow_datasets as tfds

from fcn_jax import visualize

ROOT = pathlib.Path(__file__).resolve().parent.parent
GAP = 6


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--workdir", default="runs/quickstart",
                      help="the quickstart's workdir (its checkpoint)")
  parser.add_argument("--dataset", default="synthetic_shapes/small")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--num_images", type=int, default=4)
  parser.add_argument("--output", default=None,
                      help="the figure to write (default: "
                      "WORKDIR/quickstart_predictions.jpg)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing --output")
  args = parser.parse_args()
  output = pathlib.Path(args.output or pathlib.Path(
      args.workdir, "quickstart_predictions.jpg"))
  if output.exists() and not args.overwrite:
    print(f"error: --output {output} exists; pass --overwrite to replace "
          "it, or choose another output", file=sys.stderr)
    sys.exit(2)

  source = tfds.data_source(args.dataset, split="synthetic_val",
                            data_dir=args.data_dir)
  columns = []
  with tempfile.TemporaryDirectory() as tmp:
    images_dir = pathlib.Path(tmp, "images")
    images_dir.mkdir()
    truths = []
    for i in range(args.num_images):
      example = source[i]
      Image.fromarray(example["image"]).save(images_dir / f"val_{i}.png")
      truths.append(visualize.overlay(example["image"],
                                      example["segmentation_mask"][..., 0]))
    subprocess.run(
        [sys.executable, "-m", "fcn_jax.predict", "--checkpoint",
         args.workdir, "--input", str(images_dir), "--output",
         str(pathlib.Path(tmp, "predictions")), "--no_progress"],
        check=True, cwd=ROOT)
    for i, truth in enumerate(truths):
      predicted = Image.open(pathlib.Path(tmp, "predictions",
                                          f"val_{i}_overlay.jpg")).convert("RGB")
      columns.append((truth, predicted))

  width = sum(max(t.width, p.width) + GAP for t, p in columns)
  height = max(t.height + GAP + p.height for t, p in columns)
  canvas = Image.new("RGB", (width, height), "white")
  x = 0
  for truth, predicted in columns:
    canvas.paste(truth, (x, 0))
    canvas.paste(predicted, (x, truth.height + GAP))
    x += max(truth.width, predicted.width) + GAP
  output.parent.mkdir(parents=True, exist_ok=True)
  canvas.save(output, quality=85)
  print(f"wrote {output} ({output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
  main()
