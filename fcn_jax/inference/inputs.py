"""Prediction's inputs: finding images, decoding them upright, and the
matching files of nets that read more than the colour image.

``--input`` takes files, folders (their images, not recursive) and glob
patterns (:func:`find_inputs`). Images are decoded as uint8 RGB, turned
upright per their EXIF orientation (:func:`load_image`), 16-bit images scaled
to 8 bits as viewers show them (:func:`to_rgb8`). NYUD's color-HHA and
color-D nets take their second image from a file named like the ``--input``
image (:func:`matching_file`, :func:`load_example`).
"""

from __future__ import annotations

import glob
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from fcn_jax import errors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                  ".webp", ".ppm", ".pgm")
# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class InputError(errors.UserError):
  """An input that cannot be used (missing, not an image, corrupt)."""


def find_inputs(patterns: Sequence[str]) -> list[pathlib.Path]:
  """Expands files, folders (their images) and glob patterns, in order.

  Raises:
    InputError: If a pattern matches nothing.
  """
  paths: list[pathlib.Path] = []
  for pattern in patterns:
    path = pathlib.Path(pattern)
    if path.is_dir():
      found = sorted(p for p in path.iterdir()
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
      if not found:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder "
                         f"{path}")
    elif path.is_file():
      found = [path]
    else:
      found = sorted(pathlib.Path(p) for p in glob.glob(pattern)
                     if os.path.isfile(p))
      if not found:
        raise InputError(f"--input {pattern!r} matches no file")
    paths.extend(p for p in found if p not in paths)
  return paths


def image_size(path: pathlib.Path) -> tuple[int, int]:
  """``(height, width)`` as the image will be decoded, from its header."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f"cannot read image {path}: {e}") from e
  return height, width


def to_rgb8(image: Image.Image, path: pathlib.Path) -> np.ndarray:
  """uint8 RGB ``[H, W, 3]`` of a decoded image.

  16-bit images are scaled to 8 bits as viewers show them: PIL reads 16-bit
  colour PNGs as their high bytes, and grey ones (modes ``I;16*``, ``I``),
  which its ``convert`` would clip at 255, get their high bytes here too.
  Floating-point images have no standard 8-bit view and are refused.

  Raises:
    InputError: A floating-point image, or integers beyond 16 bits.
  """
  if image.mode.startswith("I"):
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise InputError(
          f"{path}: a {image.mode} image with values outside 0..65535, which "
          "has no standard 8-bit view; convert it to 8-bit RGB first")
    grey = (values >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode == "F":
    raise InputError(f"{path}: a floating-point image (mode F) has no "
                     "standard 8-bit view; convert it to 8-bit RGB first")
  return np.asarray(image.convert("RGB"))


def load_image(path: pathlib.Path) -> np.ndarray:
  """Decodes an image as uint8 RGB ``[H, W, 3]``, upright per its EXIF tag
  (16-bit images scaled to 8 bits, see :func:`to_rgb8`)."""
  try:
    with Image.open(path) as image:
      return to_rgb8(ImageOps.exif_transpose(image), path)
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"cannot decode image {path}: {e}") from e


def load_depth(path: pathlib.Path) -> np.ndarray:
  """Decodes a one-channel depth PNG as its raw values ``[H, W]``."""
  try:
    with Image.open(path) as image:
      depth = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f"cannot decode depth map {path}: {e}") from e
  if depth.ndim != 2:
    raise InputError(f"{path}: a depth map has one channel, this has shape "
                     f"{depth.shape}")
  if depth.size and depth.min() <= 0:
    raise InputError(f"{path}: depth values <= 0 (the net takes "
                     "log(depth); fill the holes first)")
  return depth


# The features a net may read besides its first one, with their flags and
# loaders (docs/reference.md §8.2).
EXTRA_SOURCES = {"hha": ("--hha", load_image), "depth": ("--depth",
                                                          load_depth)}


def matching_file(locator: str, path: pathlib.Path) -> pathlib.Path:
  """The file of another input that belongs with the image ``path``.

  Args:
    locator: A folder (the file with the same stem and an image suffix) or
      a pattern in which ``{name}`` stands for the stem.
    path: The ``--input`` image.

  Raises:
    InputError: No such file (or several candidates in the folder).
  """
  if "{name}" in locator:
    found = pathlib.Path(locator.replace("{name}", path.stem))
    if not found.is_file():
      raise InputError(f"no {found} for {path}")
    return found
  folder = pathlib.Path(locator)
  candidates = sorted(p for p in folder.glob(glob.escape(path.stem) + ".*")
                      if p.suffix.lower() in IMAGE_SUFFIXES)
  if len(candidates) != 1:
    raise InputError(
        f"{'no' if not candidates else 'several'} {path.stem}.<image "
        f"suffix> in {folder} for {path}"
        + (f": {[c.name for c in candidates]}" if candidates else ""))
  return candidates[0]


def load_example(path: pathlib.Path, primary: str,
                 extras: dict[str, str]) -> dict[str, np.ndarray]:
  """The arrays of one example: the ``--input`` image as ``primary`` and each
  other feature from its matching file (``extras``: feature -> locator)."""
  example = {primary: load_image(path)}
  for feature, locator in extras.items():
    example[feature] = EXTRA_SOURCES[feature][1](matching_file(locator, path))
  sizes = {k: v.shape[:2] for k, v in example.items()}
  if len(set(sizes.values())) > 1:
    raise InputError(f"{path}: the images of this example differ in size: "
                     f"{sizes}")
  return example


def first_feature(predictor: Any) -> str:
  """The feature ``--input`` gives: the first one the net reads."""
  return next(iter(predictor.input_sources.values()))[0]


def check_extra_inputs(predictor: Any, model_name: str,
                       given: dict[str, str | None]) -> dict[str, str]:
  """The ``--hha``/``--depth`` locators the net needs, checked.

  Args:
    predictor: A :class:`fcn_jax.inference.predictor.Predictor` (what the
      net reads: ``input_sources``).
    model_name: For the messages.
    given: ``{feature: folder or pattern or None}`` from the flags.

  Raises:
    InputError: A needed one is missing, an unneeded one is given, or a
      folder does not exist.
  """
  needed = {f for fs in predictor.input_sources.values() for f in fs}
  needed.discard(first_feature(predictor))
  extras = {}
  for feature, (flag, _) in EXTRA_SOURCES.items():
    locator = given.get(feature)
    if feature in needed and not locator:
      raise InputError(
          f"{model_name} also reads {feature} images: pass {flag} FOLDER "
          f"(files named like the --input images) or {flag} "
          f"'PATTERN/{{name}}.png'")
    if feature not in needed and locator:
      raise InputError(f"{model_name} does not read {feature} images; drop "
                       f"{flag}")
    if locator:
      if "{name}" not in locator and not os.path.isdir(locator):
        raise InputError(f"{flag} {locator}: no such folder (or give a "
                         "pattern with {name})")
      extras[feature] = locator
  return extras
