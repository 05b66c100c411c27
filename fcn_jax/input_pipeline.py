"""grain input pipeline: per-host sharded, deterministic, checkpointable.

Reads the ``array_record`` files of a TFDS builder from
:mod:`fcn_jax.datasets` with ``tfds`` data sources (no TensorFlow), decodes
with PIL and augments with NumPy, in grain worker processes.

Training (:func:`create_train_iterator`) yields host-local batches forever::

  {'image': float32 [local_batch, H, W, 3],   # preprocessed, pad value 0
   'label': int32   [local_batch, H, W]}      # 255 = ignore (void and pad)

with ``local_batch = config.batch_size // process_count``. Two orders:

* ``config.input.train_mode = 'reference'``: ``solve.py`` (FCN_SPEC.md §5.3):
  each step draws one image uniformly at random *with replacement* from this
  host's shard, at native size, without augmentation. The ``i``-th draw of
  host ``p`` is ``np.random.default_rng((sampling_seed, p, i)).integers(n)``:
  deterministic and seeded by ``config.input.sampling_seed`` (1337 like
  ``solve.py``), though not Python ``random``'s exact sequence.
* ``'epochs'``: shuffled passes over the host's shard (a new permutation each
  pass), with random scale, random mirror and a random crop (padded where the
  image is smaller) to ``crop_size`` x ``crop_size``, so every batch has the
  same shape and the train step compiles once.

Evaluation (:func:`create_eval_iterator`) visits every example exactly once
across hosts. Each batch adds ``'valid': bool [local_batch]``; padding
examples (image 0, label all 255, ``valid`` False) fill the last batch and
make every host yield the same number of batches. Images are padded to
``eval_pad_size`` squared (bottom and right; label 255 there), or, with
``eval_pad_size = 0`` (exact mode), kept at native size with one image per
host and batch.

Config fields read (all required unless a default is given):

=============================== ======= ========================================
``dataset.name``                str     ``'voc_seg'``, ``'synthetic_shapes'`` or
                                        ``'synthetic_shapes/tiny'`` ...
``dataset.data_dir``            str     TFDS data dir; ``''`` = TFDS default
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
with the training checkpoint and call ``set_state`` on a fresh iterator made
from the same config (same seed, split, batch size and process count) to
continue with exactly the batches the first run would have seen next.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Iterator, Sequence

from absl import flags
from absl import logging
import grain
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
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
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
      builder.download_and_prepare()
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


# --------------------------------------------------------------------------
# Per-example transforms (NumPy/PIL; run in grain workers).
# --------------------------------------------------------------------------


def decode_record(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """``(uint8 [H, W, 3] RGB image, uint8 [H, W] label)`` from a record."""
  image = common.decode_image(record[common.IMAGE])
  label = common.decode_mask(record[common.MASK])
  if label.ndim == 3:
    label = label[..., 0]
  return image, label


def rescale(image: np.ndarray, label: np.ndarray,
            scale: float) -> tuple[np.ndarray, np.ndarray]:
  """Resizes by ``scale``: bilinear for the image, nearest for the label."""
  height, width = label.shape
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  if size == (width, height):
    return image, label
  image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
  return image, label


def place_in_canvas(image: np.ndarray, label: np.ndarray, size: int, top: int,
                    left: int,
                    preprocessing: preprocessing_lib.Preprocessing
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Crops ``size`` x ``size`` at ``(top, left)`` and pads what is missing.

  The window is clipped to the image; the part of the canvas it does not
  cover (bottom and right) gets image value 0 *after* preprocessing (the mean
  colour) and label 255. Only the cropped pixels are preprocessed.

  Returns:
    ``(float32 [size, size, 3], int32 [size, size])``.
  """
  crop_label = label[top:top + size, left:left + size]
  crop_image = image[top:top + size, left:left + size]
  height, width = crop_label.shape
  out_image = np.zeros((size, size, 3), np.float32)
  out_label = np.full((size, size), IGNORE_LABEL, np.int32)
  out_image[:height, :width] = preprocessing(crop_image)
  out_label[:height, :width] = crop_label
  return out_image, out_label


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """Decode, augment, preprocess one training record (see module docstring).

  Random draws per example, in this order: scale ``U(min, max)`` (only when
  the range is not ``(1, 1)``), mirror (only when enabled), crop offsets
  (only when ``crop_size > 0``).
  """

  preprocessing: preprocessing_lib.Preprocessing
  crop_size: int
  random_mirror: bool
  scale_range: tuple[float, float]

  def random_map(self, record: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    image, label = decode_record(record)
    if self.scale_range != (1.0, 1.0):
      image, label = rescale(image, label, rng.uniform(*self.scale_range))
    if self.random_mirror and rng.random() < 0.5:
      image, label = image[:, ::-1], label[:, ::-1]
    if self.crop_size == 0:
      return {"image": self.preprocessing(image),
              "label": label.astype(np.int32)}
    height, width = label.shape
    top = int(rng.integers(0, max(height - self.crop_size, 0) + 1))
    left = int(rng.integers(0, max(width - self.crop_size, 0) + 1))
    image, label = place_in_canvas(image, label, self.crop_size, top, left,
                                   self.preprocessing)
    return {"image": image, "label": label}


@dataclasses.dataclass(frozen=True)
class EvalLookup(grain.transforms.Map):
  """Index -> eval example of this host (real, or a padding example).

  Indices ``< num_real`` read ``records[start + index]``; the others are
  padding: image 0, label all 255, ``valid`` False, with the shape every
  example of this host has (``pad_size`` squared), or in exact mode the
  shape of the host's first example (so no new shape is compiled).
  """

  records: Sequence[dict[str, Any]]
  start: int
  num_real: int
  pad_size: int
  preprocessing: preprocessing_lib.Preprocessing
  include_ids: bool = False

  def map(self, index: int) -> dict[str, np.ndarray]:
    if index < self.num_real:
      record = self.records[self.start + index]
      image, label = decode_record(record)
      image_id = _as_str(record[common.IMAGE_ID])
      height, width = label.shape
      if self.pad_size:
        if max(height, width) > self.pad_size:
          raise ValueError(
              f"{image_id} is {height}x{width}, larger than "
              f"config.input.eval_pad_size={self.pad_size}; raise it (VOC "
              "images are at most 500x500) or use 0 for native sizes.")
        image, label = place_in_canvas(image, label, self.pad_size, 0, 0,
                                       self.preprocessing)
      else:
        image, label = self.preprocessing(image), label.astype(np.int32)
      valid = True
    else:
      if self.pad_size:
        height = width = self.pad_size
      elif self.num_real:
        first = self.records[self.start]
        height, width = int(first[common.HEIGHT]), int(first[common.WIDTH])
      else:
        height = width = 32
      image = np.zeros((height, width, 3), np.float32)
      label = np.full((height, width), IGNORE_LABEL, np.int32)
      image_id, valid = "", False
    example = {"image": image, "label": label, "valid": np.bool_(valid)}
    if self.include_ids:
      example["image_id"] = np.asarray(image_id)
    return example


def _as_str(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


class SampleWithReplacement(grain.MapDataset):
  """Infinite dataset: element ``i`` is a uniform draw from ``parent``.

  Draw ``i`` is ``np.random.default_rng((seed, stream, i)).integers(n)``:
  independent of every other draw, so random access and checkpointing are
  exact, and different ``stream`` values (hosts) draw independently.
  """

  def __init__(self, parent: grain.MapDataset, *, seed: int, stream: int):
    super().__init__(parent)
    if not len(parent):  # pylint: disable=g-explicit-length-test
      raise ValueError("Cannot sample from an empty dataset.")
    self._seed = seed
    self._stream = stream

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return f"SampleWithReplacement(seed={self._seed}, stream={self._stream})"

  def draw(self, index: int) -> int:
    """The parent index of element ``index``."""
    rng = np.random.default_rng((self._seed, self._stream, index))
    return int(rng.integers(len(self._parent)))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.draw(index)]


# --------------------------------------------------------------------------
# Pipelines.
# --------------------------------------------------------------------------


def _to_iter_dataset(ds: grain.MapDataset, cfg: InputConfig
                     ) -> grain.IterDataset:
  """Prefetching: one thread per process, ``num_workers`` processes."""
  read_options = grain.ReadOptions(
      num_threads=1, prefetch_buffer_size=cfg.prefetch_buffer_size)
  iter_ds = ds.to_iter_dataset(read_options)
  if cfg.num_workers:
    if not flags.FLAGS.is_parsed():
      # grain's workers read absl flags (with their defaults); outside an
      # absl app (notebooks, pytest) nothing has parsed them yet.
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers,
        per_worker_buffer_size=cfg.prefetch_buffer_size))
  return iter_ds


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
  start, end = host_shard_bounds(len(source.records), process_index,
                                 process_count)
  if end == start:
    raise ValueError(f"{source.description} has {len(source.records)} "
                     f"examples, too few for {process_count} hosts.")
  ds = grain.MapDataset.source(source.records)[start:end]
  if cfg.train_mode == "reference":
    ds = SampleWithReplacement(ds, seed=cfg.sampling_seed, stream=process_index)
  else:
    ds = ds.shuffle(seed=_seed32(cfg.seed)).repeat()
  ds = ds.random_map(
      TrainTransform(preprocessing, cfg.crop_size, cfg.random_mirror,
                     cfg.scale_range),
      seed=_seed32(cfg.seed + 1))
  ds = ds.batch(local_batch, drop_remainder=True)
  source.log(
      "train, host %d/%d has examples [%d, %d) of %d; mode=%s, local batch "
      "%d, crop %s, mirror=%s, scale=%s, %d workers, preprocessing %s.",
      process_index, process_count, start, end, len(source.records),
      cfg.train_mode, local_batch, cfg.crop_size or "native",
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
  lookup = EvalLookup(source.records, start, end - start, cfg.eval_pad_size,
                      preprocessing, include_ids)
  ds = grain.MapDataset.range(num_batches * local_batch).map(lookup)
  ds = ds.batch(local_batch, drop_remainder=True)
  source.log(
      "eval, host %d/%d has examples [%d, %d) of %d in %d batches of %d "
      "(%s), %d workers, preprocessing %s.", process_index, process_count,
      start, end, num_examples, num_batches, local_batch,
      f"padded to {cfg.eval_pad_size}" if cfg.eval_pad_size else "native size",
      cfg.num_workers, preprocessing.name)
  return EvalData(_to_iter_dataset(ds, cfg), num_batches, num_examples,
                  end - start)
