r"""Draws docs/demo_overlay.jpg: the reference FCN-8s demo output as an overlay.

  python tools/demo_overlay.py

The mask is ``output.png`` of the reference repository's demo (the official
voc-fcn8s ``fcn8s-heavy-pascal`` prediction for VOC 2007_000129,
docs/reference.md §12), decoded to class indices and drawn over
``image.jpg`` by :func:`fcn_jax.visualize.overlay`. No trained fcn_jax weights
are involved.
"""

import pathlib

import numpy as np
from PIL import Image

from fcn_jax import visualize

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "tests" / "fixtures" / "demo"


def main() -> None:
  image = np.asarray(Image.open(DEMO / "image.jpg").convert("RGB"))
  labels = visualize.read_label_png(DEMO / "output.png")
  out = ROOT / "docs" / "demo_overlay.jpg"
  out.parent.mkdir(exist_ok=True)
  visualize.overlay(image, labels).save(out, quality=85)
  print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
  main()
