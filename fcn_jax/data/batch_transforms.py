"""Records to batch arrays: decode, augment, preprocess, pad (grain maps).

Each example is written straight into its slot of the batch arrays
("canvases"), which hold the pad values beforehand: image 0 (the mean
colour *after* preprocessing) and label 255 (ignored by the loss and the
metrics); an example smaller than its slot fills the top-left corner.

* :class:`TrainBatchTransform`: a host batch of records -> ``{'image',
  'label'}``, each example augmented (:mod:`fcn_jax.data.augmentations`) with a
  generator seeded by its global position.
* :class:`EvalBatchTransform`: a batch index -> ``{'image', 'label',
  'valid'}`` of this host's eval shard, padding examples included.
* Shape buckets (:mod:`fcn_jax.data.buckets`): the train transform with
  ``buckets`` and :class:`BucketedEvalTransform` pad every example of a
  batch to the batch's bucket and add ``'size'`` int32 ``[b, 2]``, each
  example's true (height, width), for the masked nets.

Which features make the inputs and labels is the
:class:`~fcn_jax.data.input_config.ExampleLayout`: by default one colour
``image`` and one ``segmentation_mask`` (plain arrays); NYUD's nets read
``hha`` and ``depth`` too (a multi-input net's ``image`` is a dict by input
name, each input its features' preparations concatenated along channels) and
SIFT Flow's two heads their own masks (``label`` a dict by head). One random
geometry is applied to every plane of an example.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import grain
import grain.multiprocessing
import numpy as np
from PIL import Image

from fcn_jax import errors
from fcn_jax.data import augmentations
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.data import input_config
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.data import sampling
from fcn_jax import voc
from fcn_jax.datasets import common

# The batch entry of a bucketed batch that holds each example's true
# (height, width) at the top-left of its bucket: int32 [N, 2], what the model
# takes as ``sizes`` (its masks, docs/reference.md §4.12).
SIZE = "size"


def size_kwargs(batch: Mapping[str, Any]) -> dict[str, Any]:
  """``{'sizes': batch[SIZE]}`` for a bucketed batch, else nothing (the
  model then runs unmasked at the batch's shape): the model's keyword
  arguments for a batch."""
  return {"sizes": batch[SIZE]} if SIZE in batch else {}



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


def image_canvas(shape: tuple[int, ...], channels: int = 3) -> np.ndarray:
  """Float32 zeros ``[*shape, channels]``: the pad value of preprocessed
  inputs."""
  return _canvas((*shape, channels), np.float32, 0)


def label_canvas(shape: tuple[int, ...]) -> np.ndarray:
  """Int32 255s: the pad label."""
  return _canvas(shape, np.int32, voc.IGNORE_LABEL)


def input_canvases(layout: input_config.ExampleLayout,
                   shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """One :func:`image_canvas` per model input (its channel count)."""
  return {name: image_canvas(shape, channels)
          for name, _, channels in layout.inputs}


def label_canvases(layout: input_config.ExampleLayout,
                   shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """One :func:`label_canvas` per head."""
  return {head: label_canvas(shape) for head, _ in layout.labels}


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
  place_example({common.IMAGE: image}, {"score": label},
                input_config.ExampleLayout(), preprocessing,
                {common.IMAGE: out_image}, {"score": out_label})


def _preparation(feature: str,
                 preprocessing: preprocessing_lib.Preprocessing) -> Any:
  """How one input feature is prepared (docs/reference.md §8.2-§8.4)."""
  return (preprocessing if feature == common.IMAGE
          else preprocessing_lib.SOURCE_PREPROCESSING[feature])


def _prepared(feature: str, plane: Any,
              preprocessing: preprocessing_lib.Preprocessing) -> np.ndarray:
  """One input feature, prepared: float32 ``[h, w, channels]``."""
  prepare = _preparation(feature, preprocessing)
  if isinstance(prepare, preprocessing_lib.Preprocessing):
    return prepare(plane)
  return prepare(np.asarray(plane))  # Depth: log(d) - mean, one channel.


def _prepare_into(feature: str, plane: Any,
                  preprocessing: preprocessing_lib.Preprocessing,
                  out: np.ndarray) -> None:
  """One input feature, prepared, written into ``out`` (its shape)."""
  prepare = _preparation(feature, preprocessing)
  if isinstance(prepare, preprocessing_lib.Preprocessing):
    prepare(plane, out=out)  # Straight into the canvas.
  else:
    out[...] = prepare(np.asarray(plane))


def place_example(sources: Mapping[str, Any], labels: Mapping[str, Any],
                  layout: input_config.ExampleLayout,
                  preprocessing: preprocessing_lib.Preprocessing,
                  out_inputs: Mapping[str, np.ndarray],
                  out_labels: Mapping[str, np.ndarray]) -> None:
  """Writes an example's prepared inputs and labels top-left into canvases.

  Each model input is its features' preparations concatenated along
  channels (the colour ``image`` by ``preprocessing``, ``hha`` and
  ``depth`` by :data:`fcn_jax.data.preprocessing.SOURCE_PREPROCESSING`).

  Args:
    sources: The example's input planes by feature name (PIL images or
      arrays of one size).
    labels: ``[h, w]`` class indices by head.
    layout: Which features make which input.
    preprocessing: How the colour image is prepared.
    out_inputs: ``float32 [S, S, C]`` canvas per input, holding pad values.
    out_labels: ``int32 [S, S]`` canvas per head.

  Raises:
    ValueError: The example does not fit.
  """
  height, width = np.shape(next(iter(labels.values())))
  some = next(iter(out_labels.values()))
  if height > some.shape[0] or width > some.shape[1]:
    raise ValueError(f"{height}x{width} does not fit in "
                     f"{some.shape[0]}x{some.shape[1]}.")
  for name, features, _ in layout.inputs:
    out = out_inputs[name][:height, :width]
    if len(features) == 1:
      _prepare_into(features[0], sources[features[0]], preprocessing, out)
      continue
    channel = 0
    for feature in features:  # E.g. NYUD color-D: BGR, then log-depth.
      part = _prepared(feature, sources[feature], preprocessing)
      out[..., channel:channel + part.shape[-1]] = part
      channel += part.shape[-1]
  for head, label in labels.items():
    out_labels[head][:height, :width] = label


def _open_source(record: dict[str, Any], feature: str) -> Image.Image:
  """An input feature of a record as a PIL image (decoded lazily).

  Colour and HHA open as RGB; depth as a float (``F``) image of the raw
  values (:func:`fcn_jax.datasets.common.decode_depth`), which PIL
  resamples bilinearly like the colour planes.
  """
  if feature == common.DEPTH:
    return Image.fromarray(common.decode_depth(record[feature]).astype(
        np.float32), mode="F")
  return common.open_image(record[feature])


def open_example(record: dict[str, Any], layout: input_config.ExampleLayout
                 ) -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
  """A record's input planes (by feature) and label planes (by head)."""
  return ({f: _open_source(record, f) for f in layout.source_features},
          {head: common.open_mask(record[f]) for head, f in layout.labels})


def augment_example(record: dict[str, Any],
                    augmentation: augmentations.TrainAugmentation,
                    preprocessing: preprocessing_lib.Preprocessing,
                    rng: np.random.Generator,
                    out_image: Any = None, out_label: Any = None,
                    layout: input_config.ExampleLayout =
                    input_config.ExampleLayout()) -> tuple[Any, Any]:
  """Decodes, augments and preprocesses one training record.

  Args:
    record: A split record (image features encoded).
    augmentation: The random scale, mirror and crop, the same for every
      plane of the example.
    preprocessing: Applied to the augmented colour image.
    rng: This example's generator.
    out_image: Canvas to write into (e.g. one example of a batch), holding
      the pad values (a dict of them for a multi-input ``layout``); default
      a new one.
    out_label: Its label canvas (a dict for a multi-head ``layout``).
    layout: Which features make the inputs and labels.

  Returns:
    ``(float32 [H, W, C], int32 [H, W])`` (dicts for multi-input /
    multi-head layouts), ``out_image`` and ``out_label`` when given: ``H = W
    = crop_size``, or the rescaled native size when ``crop_size`` is 0.
  """
  sources, labels = augmentation.augment(*open_example(record, layout), rng)
  labels = {head: np.asarray(label) for head, label in labels.items()}
  crop = augmentation.crop_size
  shape = (crop, crop) if crop else next(iter(labels.values())).shape
  out_image = (input_canvases(layout, shape) if out_image is None
               else _unpack(out_image, layout.inputs[0][0]))
  out_label = (label_canvases(layout, shape) if out_label is None
               else _unpack(out_label, layout.labels[0][0]))
  place_example(sources, labels, layout, preprocessing, out_image, out_label)
  return layout.pack_inputs(out_image), layout.pack_labels(out_label)


def _unpack(value: Any, name: str) -> dict[str, np.ndarray]:
  return dict(value) if isinstance(value, Mapping) else {name: value}


def _batch_slot(canvases: Mapping[str, np.ndarray], j: int
                ) -> dict[str, np.ndarray]:
  return {name: canvas[j] for name, canvas in canvases.items()}


@dataclasses.dataclass(frozen=True)
class TrainBatchTransform(grain.transforms.MapWithIndex):
  """Host batch ``index`` (a list of records) -> the augmented batch arrays.

  Example ``j`` of host batch ``i`` is augmented with
  ``np.random.default_rng((seed, g))`` where ``g`` is its position in the
  global training sequence (:func:`fcn_jax.data.sampling.global_position`): the
  randomness depends only on the seed and the example, not on the number
  of hosts. Examples are written straight into the batch arrays.
  """

  augmentation: augmentations.TrainAugmentation
  preprocessing: preprocessing_lib.Preprocessing
  seed: int
  global_batch_size: int
  process_index: int = 0
  layout: input_config.ExampleLayout = input_config.ExampleLayout()
  # Native sizes at shape buckets: the buckets, the split's sizes table and
  # the global sequence of split indices (the sampling applied to
  # range(n)), from which every host finds the examples, hence the bucket,
  # of a whole global batch.
  buckets: tuple[tuple[int, int], ...] | None = None
  sizes: np.ndarray | None = None
  order: Any = None

  def bucket(self, index: int) -> tuple[int, int]:
    """The bucket of global batch ``index``: the smallest that fits all of
    its examples (the same on every host)."""
    first = index * self.global_batch_size
    parents = [self.order[first + k] for k in range(self.global_batch_size)]
    return buckets_lib.bucket_of_batch(self.sizes[parents], self.buckets)

  def map_with_index(self, index: int, records: Sequence[dict[str, Any]]
                     ) -> dict[str, Any]:
    size = len(records)

    def rng(j: int) -> np.random.Generator:
      return np.random.default_rng((self.seed, sampling.global_position(
          index * size + j, self.global_batch_size, size,
          self.process_index)))

    crop = self.augmentation.crop_size
    layout = self.layout
    if not crop and self.buckets is not None:
      shape = self.bucket(index)
      images = input_canvases(layout, (size, *shape))
      labels = label_canvases(layout, (size, *shape))
      for j, record in enumerate(records):
        augment_example(record, self.augmentation, self.preprocessing, rng(j),
                        _batch_slot(images, j), _batch_slot(labels, j),
                        layout=layout)
      return {"image": layout.pack_inputs(images),
              "label": layout.pack_labels(labels),
              SIZE: record_sizes(records)}
    if not crop:  # Native sizes: one example per batch.
      image, label = augment_example(records[0], self.augmentation,
                                     self.preprocessing, rng(0),
                                     layout=layout)
      return {"image": _map_arrays(lambda a: a[None], image),
              "label": _map_arrays(lambda a: a[None], label)}
    images = input_canvases(layout, (size, crop, crop))
    labels = label_canvases(layout, (size, crop, crop))
    for j, record in enumerate(records):
      augment_example(record, self.augmentation, self.preprocessing, rng(j),
                      _batch_slot(images, j), _batch_slot(labels, j),
                      layout=layout)
    return {"image": layout.pack_inputs(images),
            "label": layout.pack_labels(labels)}


def record_sizes(records: Sequence[dict[str, Any]]) -> np.ndarray:
  """int32 ``[len(records), 2]``: each record's (height, width)."""
  return np.asarray([(int(r[common.HEIGHT]), int(r[common.WIDTH]))
                     for r in records], np.int32).reshape(-1, 2)


def _map_arrays(function: Any, value: Any) -> Any:
  """``function`` of an array, or of each array of a dict of them."""
  if isinstance(value, Mapping):
    return {k: function(v) for k, v in value.items()}
  return function(value)


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
  layout: input_config.ExampleLayout = input_config.ExampleLayout()

  def __post_init__(self):
    if not self.pad_size and self.batch_size != 1:
      raise ValueError("Native-size evaluation (pad_size 0) needs batch 1.")

  def _read(self, position: int) -> tuple[dict[str, Image.Image],
                                          dict[str, np.ndarray], str]:
    record = self.records[self.start + position]
    sources, labels = open_example(record, self.layout)
    labels = {head: np.asarray(label, np.uint8)
              for head, label in labels.items()}
    image_id = _as_str(record[common.IMAGE_ID])
    shape = next(iter(labels.values())).shape
    if self.pad_size and max(shape) > self.pad_size:
      raise errors.UserError(
          f"{image_id} is {shape[0]}x{shape[1]}, larger than "
          f"config.input.eval_pad_size={self.pad_size}; raise it (VOC images "
          "are at most 500x500) or use 0 for native sizes.")
    return sources, labels, image_id

  def _native_shape(self) -> tuple[int, int]:
    if not self.num_real:
      return (32, 32)
    first = self.records[self.start]
    return int(first[common.HEIGHT]), int(first[common.WIDTH])

  def map(self, batch_index: int) -> dict[str, Any]:
    positions = range(batch_index * self.batch_size,
                      (batch_index + 1) * self.batch_size)
    shape = ((self.pad_size, self.pad_size) if self.pad_size else
             self._native_shape())
    if not self.pad_size and positions[0] < self.num_real:
      sources, labels, image_id = self._read(positions[0])
      shape = next(iter(labels.values())).shape
    layout = self.layout
    images = input_canvases(layout, (self.batch_size, *shape))
    label_arrays = label_canvases(layout, (self.batch_size, *shape))
    valid = np.zeros((self.batch_size,), bool)
    image_ids = [""] * self.batch_size
    for j, position in enumerate(positions):
      if position >= self.num_real:
        continue
      if self.pad_size:
        sources, labels, image_id = self._read(position)
      place_example(sources, labels, layout, self.preprocessing,
                    _batch_slot(images, j), _batch_slot(label_arrays, j))
      valid[j], image_ids[j] = True, image_id
    batch = {"image": layout.pack_inputs(images),
             "label": layout.pack_labels(label_arrays), "valid": valid}
    if self.include_ids:
      batch["image_id"] = np.asarray(image_ids)
    return batch


@dataclasses.dataclass(frozen=True)
class BucketedEvalTransform(grain.transforms.Map):
  """Batch index -> one eval batch of this host at its bucket.

  Batch ``i`` holds the examples ``positions[i]`` (split indices; -1 =
  padding: image 0, label all 255, ``valid`` False) zero-padded at the
  bottom/right to ``shapes[i]``, with each example's true ``size``
  (padding examples: the whole bucket). The plan is
  :func:`fcn_jax.data.sampling.bucketed_eval_plan`.
  """

  records: Sequence[dict[str, Any]]
  positions: np.ndarray
  shapes: np.ndarray
  preprocessing: preprocessing_lib.Preprocessing
  include_ids: bool = False
  layout: input_config.ExampleLayout = input_config.ExampleLayout()

  def map(self, batch_index: int) -> dict[str, Any]:
    positions = self.positions[batch_index]
    shape = tuple(int(v) for v in self.shapes[batch_index])
    batch_size = len(positions)
    layout = self.layout
    images = input_canvases(layout, (batch_size, *shape))
    label_arrays = label_canvases(layout, (batch_size, *shape))
    valid = np.zeros((batch_size,), bool)
    sizes = np.tile(np.asarray(shape, np.int32), (batch_size, 1))
    image_ids = [""] * batch_size
    for j, position in enumerate(positions):
      if position < 0:
        continue
      record = self.records[int(position)]
      sources, labels = open_example(record, layout)
      labels = {head: np.asarray(label, np.uint8)
                for head, label in labels.items()}
      place_example(sources, labels, layout, self.preprocessing,
                    _batch_slot(images, j), _batch_slot(label_arrays, j))
      sizes[j] = next(iter(labels.values())).shape
      valid[j], image_ids[j] = True, _as_str(record[common.IMAGE_ID])
    batch = {"image": layout.pack_inputs(images),
             "label": layout.pack_labels(label_arrays), "valid": valid,
             SIZE: sizes}
    if self.include_ids:
      batch["image_id"] = np.asarray(image_ids)
    return batch
