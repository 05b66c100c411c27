"""Opening a prepared TFDS split as a random-access source (no TensorFlow).

:func:`open_split` reads the ``array_record`` files of a builder from
:mod:`fcn_jax.datasets` through ``tfds`` data sources, keeping ``image`` and
``segmentation_mask`` encoded (the batch transforms decode them with PIL in
grain workers). ``synthetic_shapes`` is generated on first use; real
datasets must be prepared with ``python -m fcn_jax.prepare_data``.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
from typing import Any, Sequence

from absl import logging
import tensorflow_datasets as tfds

from fcn_jax import datasets
from fcn_jax import logging_utils
from fcn_jax.datasets import common


class DamagedDatasetError(OSError):
  """A prepared dataset file that cannot be read (truncated, overwritten):
  one line naming the dataset, split and file, and how to rebuild it."""


def _rebuild_advice(dataset_name: str, data_dir: str, version_dir: str
                    ) -> str:
  """How to rebuild a damaged prepared dataset, in words."""
  base = datasets.base_name(dataset_name)
  if base == "synthetic_shapes":
    return f"delete {version_dir}; the next training generates it again"
  if base in datasets.MANUAL_BUILDERS:
    command = f"--dataset {dataset_name} --manual_dir <its archives>"
  else:
    command = f"--dataset folder --name {dataset_name} --manual_dir <its folder>"
  if data_dir:
    command += f" --data_dir {data_dir}"
  return (f"delete {version_dir} (prepare_data skips a dataset that looks "
          f"prepared), then run python -m fcn_jax.prepare_data {command}")


class CheckedRecords(Sequence):
  """A TFDS ``array_record`` data source whose read errors name the file.

  ``array_record`` reports a damaged shard as a bare "Corrupted
  Riegeli/records file" deep inside grain; this wrapper turns any failed
  read into a :class:`DamagedDatasetError` naming the dataset, split and
  shard of the record, and how to rebuild it. It pickles (grain workers)
  like the source it wraps.
  """

  def __init__(self, records: Any, dataset_name: str, split: str,
               data_dir: str):
    self._records = records
    self._dataset_name = dataset_name
    self._split = split
    self._data_dir = data_dir
    instructions = records.dataset_info.splits[split].file_instructions
    self._files = [i.filename for i in instructions]
    self._ends = list(itertools.accumulate(i.take for i in instructions))

  @property
  def dataset_info(self) -> Any:
    return self._records.dataset_info

  def __len__(self) -> int:
    return len(self._records)

  def file_of(self, index: int) -> str:
    """The shard that holds record ``index``."""
    return self._files[min(bisect.bisect_right(self._ends, index),
                           len(self._files) - 1)]

  def damaged(self, path: str, error: BaseException | str
              ) -> DamagedDatasetError:
    detail = str(error).strip().splitlines()[0][:200] if str(error) else (
        type(error).__name__)
    return DamagedDatasetError(
        f"the prepared dataset {self._dataset_name} (split {self._split}) is "
        f"damaged: {path} cannot be read ({detail}); "
        + _rebuild_advice(self._dataset_name, self._data_dir,
                          os.path.dirname(path)))

  def check_files(self) -> None:
    """Opens every shard (reads its index, not its records): a truncated or
    overwritten file end is found here, before training starts; damage
    inside a shard is found when its record is read.

    Raises:
      DamagedDatasetError: A shard is missing, unreadable or holds fewer
        records than the dataset's metadata says.
    """
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    instructions = self._records.dataset_info.splits[self._split].file_instructions
    for instruction in instructions:
      path = instruction.filename
      if not os.path.isfile(path):
        raise self.damaged(path, "the file is missing")
      reader = None
      try:
        reader = array_record_module.ArrayRecordReader(path)
        ok, count = reader.ok(), reader.num_records()
        reader.close()
        reader = None
      except Exception as e:  # pylint: disable=broad-except  # C++ errors.
        raise self.damaged(path, e) from None
      if not ok or count != instruction.examples_in_shard:
        raise self.damaged(path, f"it holds {count} records, the metadata "
                           f"says {instruction.examples_in_shard}")

  def __getitem__(self, index):
    if isinstance(index, int) and not -len(self) <= index < len(self):
      raise IndexError(f"record {index} of {len(self)}")
    try:
      return self._records[index]
    except (IndexError, TypeError):
      raise
    except Exception as e:  # pylint: disable=broad-except  # C++ errors.
      raise self.damaged(self.file_of(int(index)), e) from None

  def __getitems__(self, indices):
    try:
      return self._records.__getitems__(indices)
    except Exception:  # pylint: disable=broad-except  # Name the record.
      return [self[i] for i in indices]


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
               prepare_synthetic: bool = True,
               builder: "tfds.core.DatasetBuilder | None" = None
               ) -> SplitSource:
  """Opens a prepared split as a random-access data source.

  Args:
    dataset_name: TFDS name with an optional config, e.g. ``voc_seg`` or
      ``synthetic_shapes/tiny``, or the name of a built folder dataset.
    split: Split name, e.g. ``seg11valid``.
    data_dir: TFDS data dir; ``''`` for the TFDS default.
    prepare_synthetic: Generate a ``synthetic_shapes`` dataset that is not
      there yet (it needs no download). Real datasets are never prepared
      here.
    builder: The dataset's builder, already opened (:class:`Dataset`);
      default: opened here (:func:`check_prepared`).

  Returns:
    A :class:`SplitSource` whose records keep every image feature
    (``image``, ``segmentation_mask``, ``hha``, ``depth``, ...) as encoded
    bytes.

  Raises:
    FileNotFoundError: Unknown or not prepared; the message gives the
      command that prepares it.
    ValueError: Unknown split.
  """
  if builder is None:
    builder = check_prepared(dataset_name, data_dir)
  if not builder.is_prepared():  # synthetic_shapes: generated here.
    if not prepare_synthetic:
      raise FileNotFoundError(f"Dataset {dataset_name} is not generated in "
                              f"{builder.data_dir}.")
    logging.info("[SYNTHETIC DATA, not VOC] Generating %s in %s.",
                 dataset_name, builder.data_dir)
    try:
      with logging_utils.quiet_stdout():
        builder.download_and_prepare()
    except OSError:
      # Several hosts sharing a file system: another one finished first.
      builder = datasets.builder(dataset_name, data_dir)
      if not builder.is_prepared():
        raise
  for leftover in datasets.interrupted_preparations(builder):
    logging.warning("%s was left by an interrupted prepare_data; it is not "
                    "used (delete it to free the space).", leftover)
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(f"{dataset_name} has no split {split!r}; it has "
                     f"{sorted(splits)}.")
  synthetic = bool(builder.info.metadata and
                   builder.info.metadata.get("synthetic", False))
  # Every image feature stays encoded (image, masks, NYUD's hha and 16-bit
  # depth): the batch transforms decode them with PIL.
  encoded = [key for key, feature in builder.info.features.items()
             if isinstance(feature, tfds.features.Image)]
  records = CheckedRecords(
      builder.as_data_source(
          split=split, decoders=common.skip_decoding_decoders(encoded)),
      dataset_name, split, data_dir)
  records.check_files()
  return SplitSource(records, f"{dataset_name}:{split}", synthetic)


class Dataset:
  """A dataset opened once: its builder (:func:`check_prepared`, metadata
  only) and its splits, each opened on first use (:func:`open_split`) and
  kept.

  :func:`fcn_jax.run_config.resolve` opens it and the run carries it: the
  checks of the run, the training iterator and every evaluation read the
  same builder and split sources instead of opening the dataset by name
  again (each open re-reads the builder's files and every shard's index).
  """

  def __init__(self, name: str, data_dir: str = ""):
    self.name = name
    self.data_dir = data_dir
    self.builder = check_prepared(name, data_dir)
    self._splits: dict[str, SplitSource] = {}

  @property
  def metadata(self) -> Any:
    """The builder's metadata (class names and counts, ``synthetic``)."""
    return self.builder.info.metadata

  def split(self, split: str) -> SplitSource:
    """The split as a random-access source, opened once (see
    :func:`open_split`, whose errors it raises)."""
    if split not in self._splits:
      self._splits[split] = open_split(self.name, split, self.data_dir,
                                       builder=self.builder)
    return self._splits[split]

  def __repr__(self) -> str:
    return f"Dataset({self.name!r}, {self.data_dir!r})"


def check_prepared(dataset_name: str, data_dir: str = ""
                   ) -> "tfds.core.DatasetBuilder":
  """The builder of a dataset that is named and prepared (or that is
  ``synthetic_shapes``, generated on first use); reads no data.

  Raises:
    ValueError: No name, or ``folder`` itself.
    FileNotFoundError: Unknown or not prepared; the message gives the
      command that prepares it.
  """
  builder = datasets.builder(dataset_name, data_dir)
  base_name = datasets.base_name(dataset_name)
  if not builder.is_prepared() and base_name != "synthetic_shapes":
    leftovers = datasets.interrupted_preparations(builder)
    raise FileNotFoundError(
        f"Dataset {dataset_name} is not prepared in {builder.data_dir}"
        + (f" (an interrupted prepare_data left {', '.join(leftovers)}: "
           "delete it, it is never reused)" if leftovers else "") + ". If "
        "you prepared it with prepare_data --data_dir DIR, pass "
        "--config.dataset.data_dir=DIR; else run "
        f"`python -m fcn_jax.prepare_data --dataset {dataset_name} "
        + ("--manual_dir <dir with its downloaded archives> "
           if base_name in datasets.MANUAL_BUILDERS else "")
        + (f"--data_dir {data_dir}" if data_dir else "") + "`.")
  return builder


def largest_image(source: SplitSource, limit: int | None = None
                  ) -> tuple[int, int, str]:
  """The largest image of a split: ``(height, width, image_id)`` with the
  largest side, from the ``height``/``width`` every example records (the
  images are not decoded).

  Args:
    source: The split.
    limit: Look at this many evenly spread records only (None: all).

  Raises:
    DamagedDatasetError: A record cannot be read.
  """
  best = (0, 0, "")
  count = len(source.records)
  indices = range(count) if limit is None or count <= limit else sorted(
      {i * count // limit for i in range(limit)})
  for index in indices:
    record = source.records[index]
    height, width = int(record[common.HEIGHT]), int(record[common.WIDTH])
    if max(height, width) > max(best[:2]):
      image_id = record[common.IMAGE_ID]
      best = (height, width, image_id.decode() if isinstance(
          image_id, bytes) else str(image_id))
  return best


def label_class_names(dataset_name: str, label_feature: str,
                      data_dir: str = "") -> list[str] | None:
  """The class names of one label feature of a dataset.

  ``class_names`` in a dataset's metadata names the classes of its main
  labels (``segmentation_mask``; SIFT Flow's ``semantic_mask``); another
  label feature ``<stem>_mask`` has its own ``<stem>_class_names`` (SIFT
  Flow's ``geometric_class_names``).

  Returns:
    The names, or None for an unknown dataset or one that records none.
  """
  try:
    builder = datasets.builder(dataset_name, data_dir)
  except (FileNotFoundError, ValueError):
    return None
  return datasets.label_class_names(builder.info.metadata, label_feature)


def dataset_class_names(dataset_name: str, data_dir: str = ""
                        ) -> list[str] | None:
  """The class names a dataset records in its metadata.

  Read from its prepared files or, before it is prepared, its builder's code;
  no data is read.

  Returns:
    The names (:func:`fcn_jax.datasets.dataset_classes`), or None for an
    unknown dataset or one that records no class count.
  """
  try:
    builder = datasets.builder(dataset_name, data_dir)
  except (FileNotFoundError, ValueError):
    return None  # open_split says what is wrong with the name.
  classes = datasets.dataset_classes(builder.info.metadata)
  return None if classes is None else classes[1]
