"""grain input pipeline: host-count independent, deterministic, checkpointable.

Reads the ``array_record`` files of a TFDS builder from
:mod:`fcn_jax.datasets` with ``tfds`` data sources (no TensorFlow), decodes
and augments with PIL and NumPy, in grain worker processes.

Training (:func:`create_train_iterator`) yields host-local batches forever::

  {'image': float32 [local_batch, H, W, 3],   # preprocessed, pad value 0
   'label': int32   [local_batch, H, W]}      # 255 = ignore (void and pad)

with ``local_batch = config.batch_size // process_count``. For the paper's
other nets (:class:`~fcn_jax.data.input_config.ExampleLayout`, from
``config.model.name``) ``image`` holds 4 channels (NYUD color-D: BGR and
log-depth) or is a dict of inputs (NYUD color-HHA: ``{'color', 'hha'}``),
each the dataset features its input lists (``ModelSpec.input_sources``), and
``label`` is a dict of heads (SIFT Flow: ``{'sem', 'geo'}``, read from the
features ``config.dataset.label_features`` names); every plane of an example
gets the same scale, mirror and crop. The training stream
is defined once for the whole run, independent of the number of hosts: global
batch ``i`` is examples ``[i * batch_size, (i + 1) * batch_size)`` of one
global sequence, and host ``p`` yields its part ``[p * local_batch, (p + 1) *
local_batch)`` of each global batch (:class:`~fcn_jax.data.sampling.HostSlice`),
which its devices split in order, so the device at data-parallel index ``d``
always sees the same examples. Each example's augmentation is seeded by its
position in the global sequence. Hence 1 host x 4 devices and 2 hosts x 2
devices train on the same batches and compute the same updates. Two sequences:

* ``config.input.train_mode = 'reference'``: ``solve.py``
  (docs/reference.md §5.3): each example is one image drawn uniformly at random *with replacement*
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
(:func:`~fcn_jax.data.sampling.host_shard_bounds`; the metrics are sums, so the
order does not matter). Each batch adds ``'valid': bool [local_batch]``;
padding examples (image 0, label all 255, ``valid`` False) fill the last batch
and make every host yield the same number of batches. Images are padded to
``eval_pad_size`` squared (bottom and right; label 255 there), or, with
``eval_pad_size = 0`` (exact mode), kept at native size with one image per
host and batch.

The factories take a resolved run (:class:`ResolvedInput`, which
:class:`fcn_jax.run_config.Run` is): its input fields (``dataset.*``,
``batch_size``, ``eval_batch_size``, ``seed`` and ``input.*``, whose meaning
and defaults are in :mod:`fcn_jax.default_config`, the one field reference),
its example layout (from ``model.name``: which features make the inputs), and
its dataset, opened once, whose splits they read.

Modules, one role each: :mod:`fcn_jax.data.input_config` (the fields above),
:mod:`fcn_jax.data.data_sources` (opening the TFDS split),
:mod:`fcn_jax.data.sampling` (which examples, in which order, on which host),
:mod:`fcn_jax.data.augmentations` (random scale, mirror and crop of one example),
:mod:`fcn_jax.data.batch_transforms` (records to padded, preprocessed batch
arrays) and this one (the factories that chain them).

Resuming: ``iterator.get_state()`` is a small JSON-serialisable dict; save it
with the training checkpoint (with orbax: ``grain.checkpoint.CheckpointSave(
iterator)`` / ``CheckpointRestore(iterator)``, one JSON file per process) and
restore it into a fresh iterator made from the same config (same seed,
split, batch size and ``num_workers``) to continue with exactly the batches
the first run would have seen next. The state counts global batches (the
host slice is taken before batching), so it is the same on every host and
also fits another process count
(:mod:`fcn_jax.data.iterator_state` converts it). The batches do not
depend on ``num_workers``, but the saved state's format does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Protocol

from absl import flags
from absl import logging
import grain
import numpy as np

from fcn_jax import errors
from fcn_jax import models
from fcn_jax.data import augmentations
from fcn_jax.data import batch_transforms
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.data import data_sources
from fcn_jax.data import input_config
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.data import sampling


class ResolvedInput(Protocol):
  """What the pipeline reads of a resolved run: a
  :class:`fcn_jax.run_config.Run` (which imports this module, so it is
  named here by what it holds)."""

  @property
  def input(self) -> input_config.InputConfig: ...

  @property
  def layout(self) -> input_config.ExampleLayout: ...

  @property
  def spec(self) -> models.ModelSpec: ...

  @property
  def eval_bucketed(self) -> bool: ...

  @property
  def dataset(self) -> data_sources.Dataset | None: ...


def _split(run: ResolvedInput, split: str) -> data_sources.SplitSource:
  """``split`` of the run's dataset, as the run opened it."""
  if run.dataset is None:
    raise RuntimeError("this run was resolved without its dataset (a dry "
                       "run); it has no batches")
  return run.dataset.split(split)


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


def check_train_batches(cfg: input_config.InputConfig,
                        process_count: int) -> int:
  """The training batch of one host, checked against the input settings
  (:func:`fcn_jax.run_config.resolve` calls it before anything is written).

  Raises:
    errors.UserError: Native sizes without buckets and more than one image per
      host, or the reference mode with augmentation.
  """
  local_batch = _local_batch(cfg.batch_size, process_count, "batch_size")
  if cfg.crop_size == 0 and local_batch != 1 and not cfg.train_buckets:
    raise errors.UserError(
        f"config.input.crop_size=0 trains at native image sizes, which "
        f"without shape buckets cannot be batched: set config.batch_size to "
        f"the process count ({process_count}, one image per host), "
        f"config.input.buckets='auto' (with scale_range (1, 1)), or "
        f"crop_size > 0 (got batch_size={cfg.batch_size}, "
        f"buckets={cfg.buckets!r}).")
  if cfg.train_mode == "reference" and (cfg.crop_size or cfg.augments):
    raise errors.UserError(
        "config.input.train_mode='reference' reproduces solve.py: native "
        "size, batch 1 per host, no augmentation. It needs crop_size=0, "
        "random_mirror=False and scale_range=(1.0, 1.0); got "
        f"crop_size={cfg.crop_size}, random_mirror={cfg.random_mirror}, "
        f"scale_range={cfg.scale_range}. Use train_mode='epochs' to augment.")
  return local_batch


def eval_at_buckets(cfg: input_config.InputConfig, tta_identity: bool
                    ) -> bool:
  """Whether evaluation runs at shape buckets: exact mode
  (``eval_pad_size`` 0), ``buckets`` not ``none``, and no test-time
  augmentation (which moves and resamples a bucket's padded margin)."""
  return (cfg.eval_pad_size == 0 and cfg.buckets != buckets_lib.NONE
          and tta_identity)


def check_eval_batches(cfg: input_config.InputConfig, process_count: int,
                       bucketed: bool) -> int:
  """The evaluation batch of one host, checked against the input settings
  (:func:`fcn_jax.run_config.resolve` calls it before step 1, not at the
  first evaluation).

  Raises:
    errors.UserError: Native sizes without buckets and more than one image per
      host.
  """
  local_batch = _local_batch(cfg.eval_batch_size, process_count,
                             "eval_batch_size")
  if cfg.eval_pad_size == 0 and local_batch != 1 and not bucketed:
    raise errors.UserError(
        "config.input.eval_pad_size=0 evaluates at native sizes, one image "
        f"per host: set config.eval_batch_size to the process count "
        f"({process_count}) or set eval_pad_size (e.g. 512 for VOC); got "
        f"eval_batch_size={cfg.eval_batch_size}.")
  return local_batch


def _to_iter_dataset(ds: grain.MapDataset, cfg: input_config.InputConfig
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
          worker_init_fn=batch_transforms.use_shared_memory_canvases)


def _check_features(run: ResolvedInput,
                    source: data_sources.SplitSource) -> None:
  """Refuses a split that lacks a feature the model reads (its first
  record's keys)."""
  run.layout.check_features(source.records[0].keys(), source.description,
                            run.spec.name)


def _seed32(seed: int) -> int:
  return seed % 2**32


def create_train_dataset(run: ResolvedInput,
                         preprocessing: preprocessing_lib.Preprocessing, *,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         source: data_sources.SplitSource | None = None
                         ) -> grain.IterDataset:
  """The training pipeline as a grain ``IterDataset`` (see the iterator)."""
  cfg, layout = run.input, run.layout
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = check_train_batches(cfg, process_count)
  source = source or _split(run, cfg.train_split)
  ds = grain.MapDataset.source(source.records)
  if not len(ds):  # pylint: disable=g-explicit-length-test
    raise ValueError(f"{source.description} has no examples to train on.")
  _check_features(run, source)
  def in_training_order(dataset: grain.MapDataset) -> grain.MapDataset:
    if cfg.train_mode == "reference":
      return sampling.SampleWithReplacement(dataset, seed=cfg.sampling_seed)
    return dataset.shuffle(seed=_seed32(cfg.seed)).repeat()

  ds = in_training_order(ds)
  bucketing = {}
  if cfg.train_buckets:
    sizes = buckets_lib.read_sizes(source.records)
    bucketing = dict(
        buckets=buckets_lib.resolve(cfg.buckets, cfg.max_buckets, sizes,
                                    source.description,
                                    batches_mix_sizes=cfg.batch_size > 1),
        sizes=sizes,
        # The split indices in training order: element g is the index of
        # the record at global position g.
        order=in_training_order(grain.MapDataset.range(len(sizes))))
  ds = sampling.HostSlice(ds, global_batch_size=cfg.batch_size,
                          local_batch_size=local_batch,
                          process_index=process_index)
  ds = ds.batch(local_batch, drop_remainder=True, batch_fn=list)
  ds = ds.map_with_index(batch_transforms.TrainBatchTransform(
      augmentations.TrainAugmentation(cfg.crop_size, cfg.random_mirror,
                                      cfg.scale_range),
      preprocessing, seed=_seed32(cfg.seed),
      global_batch_size=cfg.batch_size, process_index=process_index,
      layout=layout, **bucketing))
  source.log(
      "train, host %d/%d takes examples [%d, %d) of each global batch of %d "
      "from %d; mode=%s, crop %s, mirror=%s, scale=%s, %d workers, "
      "preprocessing %s.",
      process_index, process_count, process_index * local_batch,
      (process_index + 1) * local_batch, cfg.batch_size, len(source.records),
      cfg.train_mode, cfg.crop_size or (
          "native at buckets" if bucketing else "native"),
      cfg.random_mirror, cfg.scale_range, cfg.num_workers, preprocessing.name)
  return _to_iter_dataset(ds, cfg)


def create_train_iterator(run: ResolvedInput,
                          preprocessing: preprocessing_lib.Preprocessing, *,
                          process_index: int | None = None,
                          process_count: int | None = None,
                          source: data_sources.SplitSource | None = None
                          ) -> grain.DatasetIterator:
  """Returns an endless iterator of host-local training batches.

  Args:
    run: The resolved run (its input fields are in the module docstring).
    preprocessing: How uint8 RGB becomes network input (from the weights'
      metadata; e.g. ``preprocessing.CAFFE_VGG``).
    process_index: This host; default ``jax.process_index()``.
    process_count: Hosts; default ``jax.process_count()``.
    source: Use this split instead of the run's
      ``config.dataset.train_split`` (tests and benchmarks).

  Returns:
    A grain ``DatasetIterator`` (``get_state()``/``set_state()``) yielding
    ``{'image': float32 [B, H, W, 3], 'label': int32 [B, H, W]}`` with
    ``B = config.batch_size // process_count``; ``H = W = crop_size``, or
    the native size when ``crop_size`` is 0 (then ``B`` must be 1).
  """
  return iter(create_train_dataset(run, preprocessing,
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


def create_eval_iterator(run: ResolvedInput,
                         preprocessing: preprocessing_lib.Preprocessing, *,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         source: data_sources.SplitSource | None = None,
                         include_ids: bool = False) -> EvalData:
  """Returns one pass over ``config.dataset.eval_split`` for this host.

  Hosts take contiguous shards whose sizes differ by at most one; all yield
  :func:`num_eval_batches` batches, the last ones filled with padding
  examples (``valid`` False, label all 255, which the metrics ignore).

  Args:
    run: The resolved run (its input fields are in the module docstring;
      it says whether evaluation runs at shape buckets).
    preprocessing: As for training.
    process_index: This host; default ``jax.process_index()``.
    process_count: Hosts; default ``jax.process_count()``.
    source: Use this split instead of the run's
      ``config.dataset.eval_split``.
    include_ids: Also yield ``'image_id'`` (str array; ``''`` for padding).

  Returns:
    An :class:`EvalData` (iterable, with ``len``) yielding
    ``{'image': float32 [B, S, S, 3], 'label': int32 [B, S, S],
    'valid': bool [B]}`` with ``B = eval_batch_size // process_count`` and
    ``S = eval_pad_size``, or in exact mode (``eval_pad_size`` 0) ``B = 1``
    and native sizes.
  """
  cfg, layout, bucketed = run.input, run.layout, run.eval_bucketed
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = check_eval_batches(cfg, process_count, bucketed)
  source = source or _split(run, cfg.eval_split)
  num_examples = len(source.records)
  if num_examples:
    _check_features(run, source)
  if bucketed and num_examples:
    sizes = buckets_lib.read_sizes(source.records)
    positions, shapes = sampling.bucketed_eval_plan(
        sizes, buckets_lib.resolve(cfg.buckets, cfg.max_buckets, sizes,
                                   source.description),
        cfg.eval_batch_size, local_batch, process_index)
    ds = grain.MapDataset.range(len(positions)).map(
        batch_transforms.BucketedEvalTransform(
            source.records, positions, shapes, preprocessing, include_ids,
            layout))
    host_examples = int((positions >= 0).sum())
    source.log(
        "eval, host %d/%d has %d of %d examples in %d batches of %d at "
        "native size in shape buckets, %d workers, preprocessing %s.",
        process_index, process_count, host_examples, num_examples,
        len(positions), local_batch, cfg.num_workers, preprocessing.name)
    return EvalData(_to_iter_dataset(ds, cfg), len(positions), num_examples,
                    host_examples)
  start, end = sampling.host_shard_bounds(num_examples, process_index,
                                          process_count)
  num_batches = num_eval_batches(num_examples, local_batch, process_count)
  ds = grain.MapDataset.range(num_batches).map(
      batch_transforms.EvalBatchTransform(
          source.records, start, end - start, local_batch, cfg.eval_pad_size,
          preprocessing, include_ids, layout))
  source.log(
      "eval, host %d/%d has examples [%d, %d) of %d in %d batches of %d "
      "(%s), %d workers, preprocessing %s.", process_index, process_count,
      start, end, num_examples, num_batches, local_batch,
      f"padded to {cfg.eval_pad_size}" if cfg.eval_pad_size else "native size",
      cfg.num_workers, preprocessing.name)
  return EvalData(_to_iter_dataset(ds, cfg), num_batches, num_examples,
                  end - start)


def check_image_sizes(cfg: input_config.InputConfig,
                      dataset: data_sources.Dataset, *,
                      evaluate: bool) -> None:
  """Checks the crop and evaluation sizes against the split's images, before
  the first training step (not at the first evaluation, after hours).

  * ``input.eval_pad_size`` (when evaluating, if not 0) must hold the
    largest image of the evaluation split (every example records its
    ``height`` and ``width``; each record is read, no image is decoded):
    else the first evaluation would fail.
  * An ``input.crop_size`` more than twice the largest (scaled) training
    image side is warned about (it is not refused: the padding is ignored
    by the loss, so the training is right, only >= 75% of its compute
    buys nothing); up to 1000 evenly spread training records are looked
    at.

  Args:
    cfg: The input fields.
    dataset: The run's dataset (its splits are opened here, once for the
      whole run).
    evaluate: Whether the run evaluates.

  Raises:
    ValueError: ``eval_pad_size`` is smaller than an evaluation image.
    fcn_jax.data.data_sources.DamagedDatasetError: A record cannot be read.
  """
  if evaluate and cfg.eval_pad_size:
    source = dataset.split(cfg.eval_split)
    height, width, image_id = data_sources.largest_image(source)
    if max(height, width) > cfg.eval_pad_size:
      raise ValueError(
          f"config.input.eval_pad_size={cfg.eval_pad_size} is smaller than "
          f"image {image_id} ({height}x{width}) of {source.description}; "
          f"set it to at least {max(height, width)} (or 0 for native sizes)")
  if cfg.crop_size and cfg.train_mode != "reference":
    source = dataset.split(cfg.train_split)
    height, width, image_id = data_sources.largest_image(source, limit=1000)
    side = max(height, width) * max(cfg.scale_range)
    if side and cfg.crop_size > 2 * side:
      padding = 1 - (min(side, cfg.crop_size) / cfg.crop_size)**2
      logging.warning(
          "config.input.crop_size=%d is larger than every training image "
          "(the largest, %s, is %dx%d, at most %d px after scaling): at least "
          "%.1f%% of every crop is padding, which the loss ignores but which "
          "costs compute; a crop_size of about %d trains the same images.",
          cfg.crop_size, image_id, height, width, side,
          math.floor(1000 * padding) / 10,  # Never rounded up to 100%.
          int(side))
