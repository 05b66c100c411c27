"""grain input pipeline: host-count independent, deterministic, checkpointable.

Reads the ``array_record`` files of a TFDS builder from
:mod:`fcn_jax.datasets` with ``tfds`` data sources (no TensorFlow), decodes
with PIL and augments with NumPy, in grain worker processes.

Training (:func:`create_train_iterator`) yields host-local batches forever::

  {'image': float32 [local_batch, H, W, 3],   # preprocessed, pad value 0
   'label': int32   [local_batch, H, W]}      # 255 = ignore (void and pad)

with ``local_batch = config.batch_size // process_count``. The training
stream is defined once for the whole run, independent of the number of hosts:
global batch ``i`` is examples ``[i * batch_size, (i + 1) * batch_size)`` of
one global sequence, and host ``p`` yields its part ``[p * local_batch,
(p + 1) * local_batch)`` of each global batch (:class:`HostSlice`), which its
devices split in order, so the device at data-parallel index ``d`` always sees
the same examples. Each example's augmentation is seeded by its position in
the global sequence. Hence 1 host x 4 devices and 2 hosts x 2 devices train
on the same batches and compute the same updates. Two sequences:

* ``config.input.train_mode = 'reference'``: ``solve.py`` (FCN_SPEC.md §5.3):
  each example is one image drawn uniformly at random *with replacement*
  from the split, at native size, without augmentation. Draw ``g`` is
  ``np.random.default_rng((sampling_seed, 0, g)).integers(n)``:
  deterministic and seeded by ``config.input.sampling_seed`` (1337 like
  ``solve.py``), though not Python ``random``'s exact sequence.
* ``'epochs'``: shuffled passes over the split (a new permutation each
  pass), with random scale, random mirror and a random crop (padded where the
  image is smaller) to ``crop_size`` x ``crop_size``, so every batch has the
  same shape and the train step compiles once. When the split size is not a
  multiple of the batch size, batches straddle the passes.

Evaluation (:func:`create_eval_iterator`) visits every example exactly once
across hosts, each host reading its own contiguous shard
(:func:`host_shard_bounds`; the metrics are sums, so the order does not
matter). Each batch adds ``'valid': bool [local_batch]``; padding examples
(image 0, label all 255, ``valid`` False) fill the last batch and make every
host yield the same number of batches. Images are padded to
``eval_pad_size`` squared (bottom and right; label 255 there), or, with
``eval_pad_size = 0`` (exact mode), kept at native size with one image per
host and batch.

Config fields read (all required unless a default is given):

=============================== ======= ========================================
``dataset.name``                str     ``'voc_seg'``, ``'synthetic_shapes'`` or
                                        ``'synthetic_shapes/tiny'`` ...
``dataset.data_dir``            str     TFDS data dir; ``''`` (default) = TFDS's
``dataset.train_split``         str     e.g. ``'sbd_train'``, ``'train_aug'``
``dataset.eval_split``          str     e.g. ``'seg11valid'``
``batch_size``                  int     global train batch
``eval_batch_size``             int     global eval batch
``seed``                        int     shuffling and augmentation seed
``input.train_mode``            str     ``'reference'`` or ``'epochs'``
``input.crop_size``             int     0 = native size (needs 1 image/host)
``input.random_mirror``         bool    flip left-right with probability 1/2
``input.scale_range``           tuple   (min, max) scale; (1.0, 1.0) = off
``input.eval_pad_size``         int     0 = exact mode (native, 1 image/host)
``input.num_workers``           int     grain worker processes; 0 = in-process
``input.sampling_seed``         int     reference-mode draws (1337)
``input.prefetch_buffer_size``  int     batches buffered per worker (default 2)
=============================== ======= ========================================

Resuming: ``iterator.get_state()`` is a small JSON-serialisable dict; save it
with the training checkpoint (with orbax: ``grain.checkpoint.CheckpointSave(
iterator)`` / ``CheckpointRestore(iterator)``, one JSON file per process) and
restore it into a fresh iterator made from the same config (same seed,
split, batch size, process count and ``num_workers``) to continue with
exactly the batches the first run would have seen next. The batches do not
depend on ``num_workers``, but the saved state's format does.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Iterator, Sequence

from absl import flags
from absl import logging
import grain
import grain.multiprocessing
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fcn_jax import preprocessing as preprocessing_lib
from fcn_jax import datasets
from fcn_jax.datasets import common

IGNORE_LABEL = common.IGNORE_LABEL
TRAIN_MODES = ("reference", "epochs")


# --------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The validated config fields the pipeline uses (see module docstring)."""

  dataset_name: str
  data_dir: str
  train_split: str
  eval_split: str
  batch_size: int
  eval_batch_size: int
  seed: int
  train_mode: str
  crop_size: int
  random_mirror: bool
  scale_range: tuple[float, float]
  eval_pad_size: int
  num_workers: int
  sampling_seed: int
  prefetch_buffer_size: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "InputConfig":
    """Reads and checks the fields; errors name the field and the fix."""

    def get(path: str, default: Any = dataclasses.MISSING) -> Any:
      node = config
      for part in path.split("."):
        if part not in node:
          if default is dataclasses.MISSING:
            raise ValueError(
                f"config.{path} is missing; the input pipeline needs it (see "
                "the fcn_jax.input_pipeline docstring for every field).")
          return default
        node = node[part]
      return node

    scale_range = tuple(float(s) for s in get("input.scale_range"))
    out = cls(
        dataset_name=str(get("dataset.name")),
        data_dir=str(get("dataset.data_dir", "") or ""),
        train_split=str(get("dataset.train_split")),
        eval_split=str(get("dataset.eval_split")),
        batch_size=int(get("batch_size")),
        eval_batch_size=int(get("eval_batch_size")),
        seed=int(get("seed")),
        train_mode=str(get("input.train_mode")),
        crop_size=int(get("input.crop_size")),
        random_mirror=bool(get("input.random_mirror")),
        scale_range=scale_range,  # pytype: disable=wrong-arg-types
        eval_pad_size=int(get("input.eval_pad_size")),
        num_workers=int(get("input.num_workers")),
        sampling_seed=int(get("input.sampling_seed")),
        prefetch_buffer_size=int(get("input.prefetch_buffer_size", 2)),
    )
    if out.train_mode not in TRAIN_MODES:
      raise ValueError(f"config.input.train_mode must be one of {TRAIN_MODES}, "
                       f"got {out.train_mode!r}.")
    if (len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]):
      raise ValueError("config.input.scale_range must be (min, max) with "
                       f"0 < min <= max, got {get('input.scale_range')!r}.")
    for name in ("crop_size", "eval_pad_size", "num_workers"):
      if getattr(out, name) < 0:
        raise ValueError(f"config.input.{name} must be >= 0, got "
                         f"{getattr(out, name)}.")
    if out.prefetch_buffer_size < 1:
      raise ValueError("config.input.prefetch_buffer_size must be >= 1.")
    return out

  @property
  def augments(self) -> bool:
    return self.random_mirror or self.scale_range != (1.0, 1.0)


def _local_batch(global_batch: int, process_count: int, field: str) -> int:
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(
        f"config.{field}={global_batch} must be a positive multiple of the "
        f"process count ({process_count}); each host takes an equal share.")
  return global_batch // process_count


def _process_info(process_index: int | None,
                  process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in "
                     f"[0, {process_count}).")
  return process_index, process_count


def host_shard_bounds(num_examples: int, process_index: int,
                      process_count: int) -> tuple[int, int]:
  """``[start, end)`` of this host's contiguous shard; sizes differ by <= 1."""
  start = num_examples * process_index // process_count
  end = num_examples * (process_index + 1) // process_count
  return start, end


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """A random-access split plus what the logs should say about it."""

  records: Sequence[dict[str, Any]]
  description: str
  synthetic: bool

  def log(self, message: str, *args) -> None:
    """Logs a line that says SYNTHETIC whenever the data is."""
    prefix = "[SYNTHETIC DATA, not VOC] " if self.synthetic else ""
    logging.info(prefix + "%s: " + message, self.description, *args)


def open_split(dataset_name: str, split: str, data_dir: str = "", *,
               prepare_synthetic: bool = True) -> SplitSource:
  """Opens a prepared split as a random-access data source.

  Args:
    dataset_name: TFDS name with an optional config, e.g. ``voc_seg`` or
      ``synthetic_shapes/tiny``.
    split: Split name, e.g. ``seg11valid``.
    data_dir: TFDS data dir; ``''`` for the TFDS default.
    prepare_synthetic: Generate a ``synthetic_shapes`` dataset that is not
      there yet (it needs no download). Real datasets are never prepared
      here.

  Returns:
    A :class:`SplitSource` whose records keep ``image`` and
    ``segmentation_mask`` as encoded bytes.

  Raises:
    FileNotFoundError: The dataset is not prepared; the message gives the
      command that prepares it.
    ValueError: Unknown dataset or split.
  """
  base_name = dataset_name.split("/")[0].split(":")[0]
  if base_name not in datasets.BUILDERS:
    raise ValueError(f"Unknown dataset {dataset_name!r}; choose one of "
                     f"{sorted(datasets.BUILDERS)} (optionally with a config, "
                     "e.g. 'synthetic_shapes/tiny').")
  builder = tfds.builder(dataset_name, data_dir=data_dir or None)
  if not builder.is_prepared():
    if base_name == "synthetic_shapes" and prepare_synthetic:
      logging.info("[SYNTHETIC DATA, not VOC] Generating %s in %s.",
                   dataset_name, builder.data_dir)
      try:
        builder.download_and_prepare()
      except OSError:
        # Several hosts sharing a file system: another one finished first.
        builder = tfds.builder(dataset_name, data_dir=data_dir or None)
        if not builder.is_prepared():
          raise
    else:
      raise FileNotFoundError(
          f"Dataset {dataset_name} is not prepared in {builder.data_dir}. Run "
          f"`python -m fcn_jax.prepare_data --dataset {dataset_name} "
          + ("--manual_dir <dir with the VOC and SBD archives> "
             if base_name == "voc_seg" else "")
          + (f"--data_dir {data_dir}" if data_dir else "") + "` first.")
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(f"{dataset_name} has no split {split!r}; it has "
                     f"{sorted(splits)}.")
  synthetic = bool(builder.info.metadata and
                   builder.info.metadata.get("synthetic", False))
  records = builder.as_data_source(split=split,
                                   decoders=common.skip_decoding_decoders())
  return SplitSource(records, f"{dataset_name}:{split}", synthetic)


def dataset_class_names(dataset_name: str, data_dir: str = ""
                        ) -> list[str] | None:
  """The class names a dataset's builder records (``num_classes`` and
  ``class_names`` in its metadata), from its prepared files or, before it is
  prepared, its code; no data is read.

  Returns:
    The names (``class_<i>`` where only a count is recorded), or None for an
    unknown dataset or one that records no classes.
  """
  if dataset_name.split("/")[0].split(":")[0] not in datasets.BUILDERS:
    return None  # open_split names the known ones.
  metadata = tfds.builder(dataset_name, data_dir=data_dir or None).info.metadata
  if not metadata:
    return None
  if metadata.get("class_names"):
    return [str(name) for name in metadata["class_names"]]
  if metadata.get("num_classes"):
    return [f"class_{i}" for i in range(int(metadata["num_classes"]))]
  return None


# --------------------------------------------------------------------------
# Per-example transforms (NumPy/PIL; run in grain workers).
# --------------------------------------------------------------------------


def decode_record(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """``(uint8 [H, W, 3] RGB image, uint8 [H, W] label)`` from a record."""
  return (common.decode_image(record[common.IMAGE]),
          common.decode_mask(record[common.MASK]))


def rescale_window(image: Image.Image, label: Image.Image,
                   scaled_size: tuple[int, int],
                   window: tuple[int, int, int, int]
                   ) -> tuple[Image.Image, Image.Image]:
  """The ``window`` of the image and label resized to ``scaled_size``.

  Equivalent to resizing the whole image to ``scaled_size`` (bilinear for the
  image, nearest for the label) and then cropping ``window = (top, left,
  bottom, right)``, but only the window is computed (PIL's ``box``), which
  is much cheaper when upscaling before a crop. Image and label go through
  the same coordinate map, so they stay aligned.

  Args:
    image: RGB image.
    label: Single-channel label image of the same size.
    scaled_size: ``(height, width)`` of the (virtual) rescaled image.
    window: Part of the rescaled image to return.

  Returns:
    The image and label windows, ``(bottom - top) x (right - left)``.
  """
  width, height = label.size
  top, left, bottom, right = window
  if scaled_size == (height, width):
    box = (left, top, right, bottom)
    return image.crop(box), label.crop(box)
  y_ratio, x_ratio = height / scaled_size[0], width / scaled_size[1]
  box = (left * x_ratio, top * y_ratio, right * x_ratio, bottom * y_ratio)
  size = (right - left, bottom - top)
  return (image.resize(size, Image.BILINEAR, box),
          label.resize(size, Image.NEAREST, box))


def rescale(image: Image.Image, label: Image.Image,
            scale: float) -> tuple[Image.Image, Image.Image]:
  """Resizes by ``scale``: bilinear for the image, nearest for the label."""
  width, height = label.size
  size = (max(1, round(height * scale)), max(1, round(width * scale)))
  return rescale_window(image, label, size, (0, 0, size[0], size[1]))


def _pixel_rows(array: np.ndarray) -> np.ndarray:
  """``[H, W, C]`` with contiguous pixels viewed as ``[H, W * C]`` rows."""
  height, width, channels = array.shape
  if array.strides[1:] != (channels * array.itemsize, array.itemsize):
    array = np.ascontiguousarray(array)
  return np.lib.stride_tricks.as_strided(
      array, (height, width * channels), (array.strides[0], array.itemsize))


def preprocess_into(preprocessing: preprocessing_lib.Preprocessing,
                    image: np.ndarray | Image.Image, out: np.ndarray) -> None:
  """Writes ``preprocessing(image)`` into ``out``, a float32 canvas view.

  The same float32 operations in the same order as
  ``Preprocessing.__call__``, so the result is bit-identical, but about 4x
  faster (this is the pipeline's most expensive step): channels are swapped
  by PIL, each pixel row is one contiguous vector, there are no temporaries,
  and multiplications and divisions by one are skipped.

  Args:
    preprocessing: The preprocessing to apply.
    image: ``uint8 [H, W, 3]`` RGB, as an array or a PIL image.
    out: ``float32 [H, W, 3]`` whose pixels are contiguous (e.g. the
      top-left corner of a C-contiguous canvas).
  """
  if out.dtype != np.float32 or out.strides[1:] != (12, 4):
    raise ValueError("out must be a float32 [H, W, 3] view with contiguous "
                     "pixels.")
  if preprocessing.channel_order == "BGR":
    if isinstance(image, np.ndarray):
      image = Image.fromarray(image)
    image = Image.merge("RGB", image.split()[::-1])
  pixels = np.asarray(image)
  width = pixels.shape[1]
  rows_in, rows_out = _pixel_rows(pixels), _pixel_rows(out)
  mean = np.tile(np.asarray(preprocessing.mean, np.float32), width)
  if preprocessing.scale == 1.0:
    np.subtract(rows_in, mean, out=rows_out, dtype=np.float32)
  else:
    np.multiply(rows_in, np.float32(preprocessing.scale), out=rows_out,
                dtype=np.float32)
    rows_out -= mean
  if any(s != 1.0 for s in preprocessing.std):
    rows_out /= np.tile(np.asarray(preprocessing.std, np.float32), width)


def place_in_canvas(image: np.ndarray | Image.Image, label: np.ndarray,
                    preprocessing: preprocessing_lib.Preprocessing,
                    out_image: np.ndarray, out_label: np.ndarray) -> None:
  """Writes the preprocessed image and its label top-left into canvases.

  The canvases must already hold the pad values: image 0 (the mean colour
  *after* preprocessing) and label 255; only the image's area is written.

  Args:
    image: ``uint8 [h, w, 3]`` RGB (array or PIL image).
    label: ``[h, w]`` class indices.
    preprocessing: Applied to the image.
    out_image: ``float32 [S, S, 3]`` canvas, ``S >= h, w``.
    out_label: ``int32 [S, S]`` canvas.
  """
  height, width = np.shape(label)
  if height > out_label.shape[0] or width > out_label.shape[1]:
    raise ValueError(f"{height}x{width} does not fit in "
                     f"{out_label.shape[0]}x{out_label.shape[1]}.")
  preprocess_into(preprocessing, image, out_image[:height, :width])
  out_label[:height, :width] = label


# Set in grain worker processes (see _init_worker): batches are then made in
# shared memory, which grain hands to the main process without a copy.
_OUTPUT_TO_SHARED_MEMORY = False


def _init_worker(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  global _OUTPUT_TO_SHARED_MEMORY
  _OUTPUT_TO_SHARED_MEMORY = True


def _canvas(shape: tuple[int, ...], dtype: type, fill: int) -> np.ndarray:
  if _OUTPUT_TO_SHARED_MEMORY:
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
  return _canvas(shape, np.int32, IGNORE_LABEL)


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
  """Decode, augment and preprocess one training record.

  Random draws per example, in this order: scale ``U(min, max)`` (only when
  the range is not ``(1, 1)``), mirror (only when enabled), crop offsets
  (only when ``crop_size > 0``). The rescaled image is never made in full:
  only the crop window is resampled (:func:`rescale_window`), then mirrored,
  preprocessed and placed top-left on the canvas (padding bottom and right
  where the rescaled image is smaller than the crop).
  """

  preprocessing: preprocessing_lib.Preprocessing
  crop_size: int
  random_mirror: bool
  scale_range: tuple[float, float]

  def __call__(self, record: dict[str, Any], rng: np.random.Generator,
               out_image: np.ndarray | None = None,
               out_label: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(float32 [H, W, 3], int32 [H, W])``.

    With ``crop_size > 0``, ``H = W = crop_size`` and the result is written
    into ``out_image``/``out_label`` when given (canvases holding the pad
    values, e.g. one example of a batch); otherwise the native (rescaled)
    size.
    """
    image = common.open_image(record[common.IMAGE])
    label = common.open_mask(record[common.MASK])
    width, height = label.size
    if self.scale_range != (1.0, 1.0):
      scale = rng.uniform(*self.scale_range)
      height = max(1, round(height * scale))
      width = max(1, round(width * scale))
    mirror = self.random_mirror and rng.random() < 0.5
    top = left = 0
    crop_height, crop_width = height, width
    if self.crop_size:
      top = int(rng.integers(0, max(height - self.crop_size, 0) + 1))
      left = int(rng.integers(0, max(width - self.crop_size, 0) + 1))
      crop_height = min(height, self.crop_size)
      crop_width = min(width, self.crop_size)
    image, label = rescale_window(
        image, label, (height, width),
        (top, left, top + crop_height, left + crop_width))
    if mirror:
      image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      label = label.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    canvas = (self.crop_size, self.crop_size) if self.crop_size else (
        crop_height, crop_width)
    if out_image is None:
      out_image = image_canvas(canvas)
    if out_label is None:
      out_label = label_canvas(canvas)
    place_in_canvas(image, np.asarray(label), self.preprocessing, out_image,
                    out_label)
    return out_image, out_label


@dataclasses.dataclass(frozen=True)
class TrainBatchTransform(grain.transforms.MapWithIndex):
  """Host batch ``index`` (a list of records) -> the augmented batch arrays.

  Example ``j`` of host batch ``i`` is augmented with
  ``np.random.default_rng((seed, g))`` where ``g`` is its position in the
  global training sequence (:func:`global_position`): the randomness
  depends only on the seed and the example, not on the number of hosts.
  Examples are written straight into the batch arrays.
  """

  augmentation: TrainAugmentation
  seed: int
  global_batch_size: int
  process_index: int = 0

  def map_with_index(self, index: int, records: Sequence[dict[str, Any]]
                     ) -> dict[str, np.ndarray]:
    size = len(records)

    def rng(j: int) -> np.random.Generator:
      return np.random.default_rng((self.seed, global_position(
          index * size + j, self.global_batch_size, size,
          self.process_index)))

    crop = self.augmentation.crop_size
    if not crop:  # Native sizes: one example per batch.
      image, label = self.augmentation(records[0], rng(0))
      return {"image": image[None], "label": label[None]}
    images = image_canvas((size, crop, crop))
    labels = label_canvas((size, crop, crop))
    for j, record in enumerate(records):
      self.augmentation(record, rng(j), images[j], labels[j])
    return {"image": images, "label": labels}


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

  def _read(self, position: int) -> tuple[np.ndarray, np.ndarray, str]:
    record = self.records[self.start + position]
    image, label = decode_record(record)
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


def _as_str(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


class SampleWithReplacement(grain.MapDataset):
  """Infinite dataset: element ``i`` is a uniform draw from ``parent``.

  Draw ``i`` is ``np.random.default_rng((seed, 0, i)).integers(n)``:
  independent of every other draw, so random access and checkpointing are
  exact. (The 0 was the host index when each host drew its own stream; it
  keeps single-host draws as they were.)
  """

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    if not len(parent):  # pylint: disable=g-explicit-length-test
      raise ValueError("Cannot sample from an empty dataset.")
    self._seed = seed

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return f"SampleWithReplacement(seed={self._seed})"

  def draw(self, index: int) -> int:
    """The parent index of element ``index``."""
    rng = np.random.default_rng((self._seed, 0, index))
    return int(rng.integers(len(self._parent)))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.draw(index)]


def global_position(host_position: int, global_batch_size: int,
                    local_batch_size: int, process_index: int) -> int:
  """Where a host's ``host_position``-th training example is globally.

  Host ``p`` takes examples ``[p * local, (p + 1) * local)`` of every global
  batch of ``global_batch_size = process_count * local`` examples.
  """
  batch, offset = divmod(host_position, local_batch_size)
  return (batch * global_batch_size + process_index * local_batch_size
          + offset)


class HostSlice(grain.MapDataset):
  """This host's part of every global batch of ``parent``.

  Element ``k`` is ``parent[global_position(k, ...)]``: batching this
  dataset by ``local_batch_size`` gives host ``process_index`` its slice of
  each global batch of ``parent``, so all hosts together consume
  ``parent`` in order, whatever their number.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int,
               local_batch_size: int, process_index: int):
    super().__init__(parent)
    if global_batch_size % local_batch_size or not (
        0 <= process_index < global_batch_size // local_batch_size):
      raise ValueError(
          f"process {process_index} cannot take {local_batch_size} examples "
          f"of each global batch of {global_batch_size}.")
    self._global = global_batch_size
    self._local = local_batch_size
    self._process = process_index

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __str__(self) -> str:
    return (f"HostSlice(process={self._process}, local={self._local}, "
            f"global={self._global})")

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[global_position(index, self._global, self._local,
                                        self._process)]


# --------------------------------------------------------------------------
# Pipelines.
# --------------------------------------------------------------------------


def _to_iter_dataset(ds: grain.MapDataset, cfg: InputConfig
                     ) -> grain.IterDataset:
  """Prefetching: a thread in-process, or ``num_workers`` processes.

  Worker processes make each batch directly in shared memory and queue up
  to ``prefetch_buffer_size`` of them; they prefetch nothing besides, so
  closing the iterator leaves no shared memory behind.
  """
  if not cfg.num_workers:
    return ds.to_iter_dataset(grain.ReadOptions(
        num_threads=1, prefetch_buffer_size=cfg.prefetch_buffer_size))
  if not flags.FLAGS.is_parsed():
    # grain's workers read absl flags (with their defaults); outside an
    # absl app (notebooks, pytest) nothing has parsed them yet.
    flags.FLAGS.mark_as_parsed()
  return ds.to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)).mp_prefetch(
          grain.MultiprocessingOptions(
              num_workers=cfg.num_workers,
              per_worker_buffer_size=cfg.prefetch_buffer_size),
          worker_init_fn=_init_worker)


def _seed32(seed: int) -> int:
  return seed % 2**32


def create_train_dataset(config: ml_collections.ConfigDict,
                         preprocessing: preprocessing_lib.Preprocessing, *,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         source: SplitSource | None = None
                         ) -> grain.IterDataset:
  """The training pipeline as a grain ``IterDataset`` (see the iterator)."""
  cfg = InputConfig.from_config(config)
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = _local_batch(cfg.batch_size, process_count, "batch_size")
  if cfg.crop_size == 0 and local_batch != 1:
    raise ValueError(
        f"config.input.crop_size=0 trains at native image sizes, which "
        f"cannot be batched: set config.batch_size to the process count "
        f"({process_count}, one image per host) or set crop_size > 0 (got "
        f"batch_size={cfg.batch_size}).")
  if cfg.train_mode == "reference" and (cfg.crop_size or cfg.augments):
    raise ValueError(
        "config.input.train_mode='reference' reproduces solve.py: native "
        "size, batch 1 per host, no augmentation. It needs crop_size=0, "
        "random_mirror=False and scale_range=(1.0, 1.0); got "
        f"crop_size={cfg.crop_size}, random_mirror={cfg.random_mirror}, "
        f"scale_range={cfg.scale_range}. Use train_mode='epochs' to augment.")
  source = source or open_split(cfg.dataset_name, cfg.train_split,
                                cfg.data_dir)
  ds = grain.MapDataset.source(source.records)
  if not len(ds):  # pylint: disable=g-explicit-length-test
    raise ValueError(f"{source.description} has no examples to train on.")
  if cfg.train_mode == "reference":
    ds = SampleWithReplacement(ds, seed=cfg.sampling_seed)
  else:
    ds = ds.shuffle(seed=_seed32(cfg.seed)).repeat()
  ds = HostSlice(ds, global_batch_size=cfg.batch_size,
                 local_batch_size=local_batch, process_index=process_index)
  ds = ds.batch(local_batch, drop_remainder=True, batch_fn=list)
  ds = ds.map_with_index(TrainBatchTransform(
      TrainAugmentation(preprocessing, cfg.crop_size, cfg.random_mirror,
                        cfg.scale_range), seed=_seed32(cfg.seed),
      global_batch_size=cfg.batch_size, process_index=process_index))
  source.log(
      "train, host %d/%d takes examples [%d, %d) of each global batch of %d "
      "from %d; mode=%s, crop %s, mirror=%s, scale=%s, %d workers, "
      "preprocessing %s.",
      process_index, process_count, process_index * local_batch,
      (process_index + 1) * local_batch, cfg.batch_size, len(source.records),
      cfg.train_mode, cfg.crop_size or "native",
      cfg.random_mirror, cfg.scale_range, cfg.num_workers, preprocessing.name)
  return _to_iter_dataset(ds, cfg)


def create_train_iterator(config: ml_collections.ConfigDict,
                          preprocessing: preprocessing_lib.Preprocessing, *,
                          process_index: int | None = None,
                          process_count: int | None = None,
                          source: SplitSource | None = None
                          ) -> grain.DatasetIterator:
  """Returns an endless iterator of host-local training batches.

  Args:
    config: The run config (fields in the module docstring).
    preprocessing: How uint8 RGB becomes network input (from the weights'
      metadata; e.g. ``preprocessing.CAFFE_VGG``).
    process_index: This host; default ``jax.process_index()``.
    process_count: Hosts; default ``jax.process_count()``.
    source: Use this split instead of opening ``config.dataset.train_split``
      (tests and benchmarks).

  Returns:
    A grain ``DatasetIterator`` (``get_state()``/``set_state()``) yielding
    ``{'image': float32 [B, H, W, 3], 'label': int32 [B, H, W]}`` with
    ``B = config.batch_size // process_count``; ``H = W = crop_size``, or
    the native size when ``crop_size`` is 0 (then ``B`` must be 1).
  """
  return iter(create_train_dataset(config, preprocessing,
                                   process_index=process_index,
                                   process_count=process_count, source=source))


@dataclasses.dataclass(frozen=True)
class EvalData:
  """One pass over the eval split for this host; iterate it once per eval.

  Attributes:
    dataset: The grain ``IterDataset``; each ``iter()`` starts a new pass.
    num_batches: Batches per pass, the same on every host.
    num_examples: Real examples in the split (all hosts).
    host_examples: Real examples this host yields.
  """

  dataset: grain.IterDataset
  num_batches: int
  num_examples: int
  host_examples: int

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iter(self.dataset)

  def __len__(self) -> int:
    return self.num_batches


def num_eval_batches(num_examples: int, local_batch: int,
                     process_count: int) -> int:
  """Batches per host so the largest host shard fits (all hosts the same)."""
  return math.ceil(math.ceil(num_examples / process_count) / local_batch)


def create_eval_iterator(config: ml_collections.ConfigDict,
                         preprocessing: preprocessing_lib.Preprocessing, *,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         source: SplitSource | None = None,
                         include_ids: bool = False) -> EvalData:
  """Returns one pass over ``config.dataset.eval_split`` for this host.

  Hosts take contiguous shards whose sizes differ by at most one; all yield
  :func:`num_eval_batches` batches, the last ones filled with padding
  examples (``valid`` False, label all 255, which the metrics ignore).

  Args:
    config: The run config (fields in the module docstring).
    preprocessing: As for training.
    process_index: This host; default ``jax.process_index()``.
    process_count: Hosts; default ``jax.process_count()``.
    source: Use this split instead of opening ``config.dataset.eval_split``.
    include_ids: Also yield ``'image_id'`` (str array; ``''`` for padding).

  Returns:
    An :class:`EvalData` (iterable, with ``len``) yielding
    ``{'image': float32 [B, S, S, 3], 'label': int32 [B, S, S],
    'valid': bool [B]}`` with ``B = eval_batch_size // process_count`` and
    ``S = eval_pad_size``, or in exact mode (``eval_pad_size`` 0) ``B = 1``
    and native sizes.
  """
  cfg = InputConfig.from_config(config)
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = _local_batch(cfg.eval_batch_size, process_count,
                             "eval_batch_size")
  if cfg.eval_pad_size == 0 and local_batch != 1:
    raise ValueError(
        "config.input.eval_pad_size=0 evaluates at native sizes, one image "
        f"per host: set config.eval_batch_size to the process count "
        f"({process_count}) or set eval_pad_size (e.g. 512 for VOC); got "
        f"eval_batch_size={cfg.eval_batch_size}.")
  source = source or open_split(cfg.dataset_name, cfg.eval_split, cfg.data_dir)
  num_examples = len(source.records)
  start, end = host_shard_bounds(num_examples, process_index, process_count)
  num_batches = num_eval_batches(num_examples, local_batch, process_count)
  ds = grain.MapDataset.range(num_batches).map(EvalBatchTransform(
      source.records, start, end - start, local_batch, cfg.eval_pad_size,
      preprocessing, include_ids))
  source.log(
      "eval, host %d/%d has examples [%d, %d) of %d in %d batches of %d "
      "(%s), %d workers, preprocessing %s.", process_index, process_count,
      start, end, num_examples, num_batches, local_batch,
      f"padded to {cfg.eval_pad_size}" if cfg.eval_pad_size else "native size",
      cfg.num_workers, preprocessing.name)
  return EvalData(_to_iter_dataset(ds, cfg), num_batches, num_examples,
                  end - start)
