"""Records to batch arrays: decode, augment, preprocess, pad (grain maps).

Each example is written straight into its slot of the batch arrays
("canvases"), which hold the pad values beforehand: image 0 (the mean
colour *after* preprocessing) and label 255 (ignored by the loss and the
metrics); an example smaller than its slot fills the top-left corner.

* :class:`TrainBatchTransform`: a host batch of records -> ``{'image',
  'label'}``, each example augmented (:mod:`fcn_jax.augmentations`) with a
  generator seeded by its global position.
* :class:`EvalBatchTransform`: a batch index -> ``{'image', 'label',
  'valid'}`` of this host's eval shard, padding examples included.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import grain.multiprocessing
import numpy as np
from PIL import Image

from fcn_jax import augmentations
from fcn_jax import preprocessing as preprocessing_lib
from fcn_jax import sampling
from fcn_jax import voc
from fcn_jax.datasets import common



# Whether canvases are made in shared memory: set in grain worker processes
# only (use_shared_memory_canvases is their worker_init_fn). grain hands a
# shared-memory batch to the main process without copying it; any other
# array it first copies into shared memory itself. The switch is per
# process because the same pickled transforms also run in the main process
# (num_workers 0), where shared memory would never be unlinked, and grain
# has no public way to ask which process a transform runs in.
_SHARED_MEMORY_CANVASES = False


def use_shared_memory_canvases(worker_index: int, worker_count: int) -> None:
  """grain ``worker_init_fn``: this process makes its canvases shared."""
  del worker_index, worker_count
  global _SHARED_MEMORY_CANVASES
  _SHARED_MEMORY_CANVASES = True


def _canvas(shape: tuple[int, ...], dtype: type, fill: int) -> np.ndarray:
  if _SHARED_MEMORY_CANVASES:
    array = grain.multiprocessing.SharedMemoryArray(shape, dtype)
    if fill:  # New POSIX shared memory is zero-filled already.
      array.fill(fill)
    return array
  return np.full(shape, fill, dtype) if fill else np.zeros(shape, dtype)


def image_canvas(shape: tuple[int, ...]) -> np.ndarray:
  """Float32 zeros ``[*shape, 3]``: the pad value of preprocessed images."""
  return _canvas((*shape, 3), np.float32, 0)


def label_canvas(shape: tuple[int, ...]) -> np.ndarray:
  """Int32 255s: the pad label."""
  return _canvas(shape, np.int32, voc.IGNORE_LABEL)


def place_in_canvas(image: np.ndarray | Image.Image, label: np.ndarray,
                    preprocessing: preprocessing_lib.Preprocessing,
                    out_image: np.ndarray, out_label: np.ndarray) -> None:
  """Writes the preprocessed image and its label top-left into canvases.

  The canvases must already hold the pad values; only the image's area is
  written.

  Args:
    image: ``uint8 [h, w, 3]`` RGB (array or PIL image).
    label: ``[h, w]`` class indices.
    preprocessing: Applied to the image.
    out_image: ``float32 [S, S, 3]`` canvas, ``S >= h, w``.
    out_label: ``int32 [S, S]`` canvas.

  Raises:
    ValueError: The example does not fit.
  """
  height, width = np.shape(label)
  if height > out_label.shape[0] or width > out_label.shape[1]:
    raise ValueError(f"{height}x{width} does not fit in "
                     f"{out_label.shape[0]}x{out_label.shape[1]}.")
  preprocessing(image, out=out_image[:height, :width])
  out_label[:height, :width] = label


def _open(record: dict[str, Any]) -> tuple[Image.Image, Image.Image]:
  """The record's RGB image and label (PIL; decoded lazily)."""
  return (common.open_image(record[common.IMAGE]),
          common.open_mask(record[common.MASK]))


def augment_example(record: dict[str, Any],
                    augmentation: augmentations.TrainAugmentation,
                    preprocessing: preprocessing_lib.Preprocessing,
                    rng: np.random.Generator,
                    out_image: np.ndarray | None = None,
                    out_label: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Decodes, augments and preprocesses one training record.

  Args:
    record: A split record (image and mask encoded).
    augmentation: The random scale, mirror and crop.
    preprocessing: Applied to the augmented image.
    rng: This example's generator.
    out_image: Canvas to write into (e.g. one example of a batch), holding
      the pad values; default a new one.
    out_label: Its label canvas.

  Returns:
    ``(float32 [H, W, 3], int32 [H, W])``, ``out_image`` and ``out_label``
    when given: ``H = W = crop_size``, or the rescaled native size when
    ``crop_size`` is 0.
  """
  image, label = augmentation(*_open(record), rng)
  label = np.asarray(label)
  crop = augmentation.crop_size
  shape = (crop, crop) if crop else label.shape
  if out_image is None:
    out_image = image_canvas(shape)
  if out_label is None:
    out_label = label_canvas(shape)
  place_in_canvas(image, label, preprocessing, out_image, out_label)
  return out_image, out_label


@dataclasses.dataclass(frozen=True)
class TrainBatchTransform(grain.transforms.MapWithIndex):
  """Host batch ``index`` (a list of records) -> the augmented batch arrays.

  Example ``j`` of host batch ``i`` is augmented with
  ``np.random.default_rng((seed, g))`` where ``g`` is its position in the
  global training sequence (:func:`fcn_jax.sampling.global_position`): the
  randomness depends only on the seed and the example, not on the number
  of hosts. Examples are written straight into the batch arrays.
  """

  augmentation: augmentations.TrainAugmentation
  preprocessing: preprocessing_lib.Preprocessing
  seed: int
  global_batch_size: int
  process_index: int = 0

  def map_with_index(self, index: int, records: Sequence[dict[str, Any]]
                     ) -> dict[str, np.ndarray]:
    size = len(records)

    def rng(j: int) -> np.random.Generator:
      return np.random.default_rng((self.seed, sampling.global_position(
          index * size + j, self.global_batch_size, size,
          self.process_index)))

    crop = self.augmentation.crop_size
    if not crop:  # Native sizes: one example per batch.
      image, label = augment_example(records[0], self.augmentation,
                                     self.preprocessing, rng(0))
      return {"image": image[None], "label": label[None]}
    images = image_canvas((size, crop, crop))
    labels = label_canvas((size, crop, crop))
    for j, record in enumerate(records):
      augment_example(record, self.augmentation, self.preprocessing, rng(j),
                      images[j], labels[j])
    return {"image": images, "label": labels}


def _as_str(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class EvalBatchTransform(grain.transforms.Map):
  """Batch index -> one eval batch of this host, padded where needed.

  Example ``j`` of batch ``i`` is this host's example ``i * batch_size + j``
  (record ``start + i * batch_size + j``) while that is ``< num_real``;
  later ones are padding: image 0, label all 255, ``valid`` False. With
  ``pad_size`` every image is padded (bottom, right) to ``pad_size``
  squared; with ``pad_size`` 0 (exact mode, batch 1) images keep their
  native size and a padding example takes the shape of the host's first
  example, so it needs no new compilation.
  """

  records: Sequence[dict[str, Any]]
  start: int
  num_real: int
  batch_size: int
  pad_size: int
  preprocessing: preprocessing_lib.Preprocessing
  include_ids: bool = False

  def __post_init__(self):
    if not self.pad_size and self.batch_size != 1:
      raise ValueError("Native-size evaluation (pad_size 0) needs batch 1.")

  def _read(self, position: int) -> tuple[Image.Image, np.ndarray, str]:
    record = self.records[self.start + position]
    image, label = _open(record)
    label = np.asarray(label, np.uint8)
    image_id = _as_str(record[common.IMAGE_ID])
    if self.pad_size and max(label.shape) > self.pad_size:
      raise ValueError(
          f"{image_id} is {label.shape[0]}x{label.shape[1]}, larger than "
          f"config.input.eval_pad_size={self.pad_size}; raise it (VOC images "
          "are at most 500x500) or use 0 for native sizes.")
    return image, label, image_id

  def _native_shape(self) -> tuple[int, int]:
    if not self.num_real:
      return (32, 32)
    first = self.records[self.start]
    return int(first[common.HEIGHT]), int(first[common.WIDTH])

  def map(self, batch_index: int) -> dict[str, np.ndarray]:
    positions = range(batch_index * self.batch_size,
                      (batch_index + 1) * self.batch_size)
    shape = ((self.pad_size, self.pad_size) if self.pad_size else
             self._native_shape())
    if not self.pad_size and positions[0] < self.num_real:
      image, label, image_id = self._read(positions[0])
      shape = label.shape
    images = image_canvas((self.batch_size, *shape))
    labels = label_canvas((self.batch_size, *shape))
    valid = np.zeros((self.batch_size,), bool)
    image_ids = [""] * self.batch_size
    for j, position in enumerate(positions):
      if position >= self.num_real:
        continue
      if self.pad_size:
        image, label, image_id = self._read(position)
      place_in_canvas(image, label, self.preprocessing, images[j], labels[j])
      valid[j], image_ids[j] = True, image_id
    batch = {"image": images, "label": labels, "valid": valid}
    if self.include_ids:
      batch["image_id"] = np.asarray(image_ids)
    return batch
