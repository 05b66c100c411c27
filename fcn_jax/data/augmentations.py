"""Training augmentation of one example: random scale, mirror and crop.

An example's random draws (:meth:`TrainAugmentation.draw`) make one
:class:`Geometry`, which is then applied identically to every plane of the
example (:meth:`Geometry.apply`): the image and its label go through the
same coordinate map and stay aligned pixel for pixel. Planes differ only in
how they are resampled: images bilinearly (:data:`IMAGE_RESAMPLING`), labels
by nearest neighbour (:data:`LABEL_RESAMPLING`: class indices must never be
blended). Planes are PIL images; preprocessing and batching come afterwards
(:mod:`fcn_jax.data.batch_transforms`). Everything here runs in grain workers.

To add an augmentation: draw its parameters in :meth:`TrainAugmentation.draw`
*after* the existing draws (so existing configs keep their streams), keep
them in :class:`Geometry` and apply them in :meth:`Geometry.apply`; one that
changes only pixel values (e.g. colour jitter) applies to the images alone,
in :meth:`TrainAugmentation.__call__`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from PIL import Image

IMAGE_RESAMPLING = Image.Resampling.BILINEAR
LABEL_RESAMPLING = Image.Resampling.NEAREST


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """``(height, width)`` times ``scale``, rounded, at least 1 pixel."""
  return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_window(plane: Image.Image, size: tuple[int, int],
                   window: tuple[int, int, int, int],
                   resample: Image.Resampling) -> Image.Image:
  """The ``window`` of ``plane`` resized to ``size``.

  Equivalent to resizing the whole plane to ``size = (height, width)`` and
  then cropping ``window = (top, left, bottom, right)``, but only the window
  is computed (PIL's ``box``), which is much cheaper when upscaling before a
  crop. Planes of the same size go through the same coordinate map.

  Args:
    plane: An image or label.
    size: ``(height, width)`` of the (virtual) rescaled plane.
    window: Part of the rescaled plane to return.
    resample: :data:`IMAGE_RESAMPLING` or :data:`LABEL_RESAMPLING`.

  Returns:
    The window, ``(bottom - top) x (right - left)``.
  """
  width, height = plane.size
  top, left, bottom, right = window
  if size == (height, width):
    return plane.crop((left, top, right, bottom))
  y_ratio, x_ratio = height / size[0], width / size[1]
  box = (left * x_ratio, top * y_ratio, right * x_ratio, bottom * y_ratio)
  return plane.resize((right - left, bottom - top), resample, box)


def rescale(plane: Image.Image, scale: float,
            resample: Image.Resampling) -> Image.Image:
  """Resizes ``plane`` by ``scale`` (:func:`scaled_size`)."""
  width, height = plane.size
  size = scaled_size(height, width, scale)
  return rescale_window(plane, size, (0, 0, *size), resample)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Where an example's output pixels come from, the same for every plane.

  Attributes:
    scaled_size: ``(height, width)`` the example is rescaled to.
    window: ``(top, left, bottom, right)`` of the rescaled example to keep.
    mirror: Flip the window left-right.
  """

  scaled_size: tuple[int, int]
  window: tuple[int, int, int, int]
  mirror: bool

  def apply(self, plane: Image.Image,
            resample: Image.Resampling) -> Image.Image:
    """Rescales, crops and mirrors one plane of the example."""
    plane = rescale_window(plane, self.scaled_size, self.window, resample)
    if self.mirror:
      plane = plane.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return plane


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
  """Random scale, mirror and crop (``config.input``) of training examples.

  Random draws per example, in this order: scale ``U(min, max)`` (only when
  the range is not ``(1, 1)``), mirror (only when enabled), crop offsets
  (only when ``crop_size > 0``). The rescaled example is never made in
  full: only the crop window is resampled (:func:`rescale_window`). Where
  the rescaled example is smaller than the crop, the window is all of it
  (the batch canvas pads it bottom and right).

  Attributes:
    crop_size: Side of the square crop; 0 keeps the (rescaled) native size.
    random_mirror: Flip left-right with probability 1/2.
    scale_range: ``(min, max)`` scale; ``(1.0, 1.0)`` is off.
  """

  crop_size: int
  random_mirror: bool
  scale_range: tuple[float, float]

  def draw(self, height: int, width: int,
           rng: np.random.Generator) -> Geometry:
    """The augmentation of one ``height x width`` example."""
    if self.scale_range != (1.0, 1.0):
      height, width = scaled_size(height, width,
                                  rng.uniform(*self.scale_range))
    mirror = self.random_mirror and rng.random() < 0.5
    top = left = 0
    crop_height, crop_width = height, width
    if self.crop_size:
      top = int(rng.integers(0, max(height - self.crop_size, 0) + 1))
      left = int(rng.integers(0, max(width - self.crop_size, 0) + 1))
      crop_height = min(height, self.crop_size)
      crop_width = min(width, self.crop_size)
    return Geometry((height, width),
                    (top, left, top + crop_height, left + crop_width),
                    bool(mirror))

  def __call__(self, image: Image.Image, label: Image.Image,
               rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """Augments an image and its label (of the same size) alike.

    Args:
      image: RGB image.
      label: Single-channel label image.
      rng: This example's generator.

    Returns:
      The augmented image and label: at most ``crop_size`` on each side,
      or the rescaled native size when ``crop_size`` is 0.
    """
    images, labels = self.augment({"image": image}, {"label": label}, rng)
    return images["image"], labels["label"]

  def augment(self, images: Mapping[str, Image.Image],
              labels: Mapping[str, Image.Image], rng: np.random.Generator
              ) -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    """Augments every plane of one example with one :class:`Geometry`.

    The random draws are those of one example (:meth:`draw`), however many
    planes it has: colour, HHA and depth inputs (resampled bilinearly; a
    depth map as a float ``F`` image) and every head's labels (nearest
    neighbour) stay aligned pixel for pixel.

    Args:
      images: Input planes by feature name, all of the labels' size.
      labels: Label planes (mode ``L``) by name; at least one.
      rng: This example's generator.

    Returns:
      ``(images, labels)``, augmented, keyed as given.

    Raises:
      ValueError: The planes differ in size.
    """
    sizes = {name: plane.size for name, plane in (*labels.items(),
                                                  *images.items())}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"the planes of an example differ in size (width, "
                       f"height): {sizes}")
    width, height = next(iter(labels.values())).size
    geometry = self.draw(height, width, rng)
    return ({name: geometry.apply(plane, IMAGE_RESAMPLING)
             for name, plane in images.items()},
            {name: geometry.apply(plane, LABEL_RESAMPLING)
             for name, plane in labels.items()})
