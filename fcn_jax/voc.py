"""PASCAL VOC constants: class names, the ignore label and the colour palette."""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def class_names(num_classes: int) -> list[str]:
  """Names for tables, legends and JSON keys: VOC's for 21 classes, else
  ``class_<i>``."""
  if num_classes == len(VOC_CLASSES):
    return list(VOC_CLASSES)
  return [f"class_{i}" for i in range(num_classes)]


def voc_colormap(num_colors: int = 256) -> np.ndarray:
  """The VOC devkit palette: bits of the index interleaved into R, G, B.

  Index ``i`` gets, for each bit triple ``(b0, b1, b2)`` of ``i`` from the
  least significant end, one more high bit in R, G and B respectively. Index
  255 (void) is (224, 224, 192).

  Returns:
    ``uint8 [num_colors, 3]`` RGB colours.
  """
  colors = np.zeros((num_colors, 3), np.uint8)
  for index in range(num_colors):
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
      r |= ((c >> 0) & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    colors[index] = (r, g, b)
  return colors
