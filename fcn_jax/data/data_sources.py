"""Opening a prepared TFDS split as a random-access source (no TensorFlow).

:func:`open_split` reads the ``array_record`` files of a builder from
:mod:`fcn_jax.datasets` through ``tfds`` data sources, keeping ``image`` and
``segmentation_mask`` encoded (the batch transforms decode them with PIL in
grain workers). ``synthetic_shapes`` is generated on first use; real
datasets must be prepared with ``python -m fcn_jax.prepare_data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import tensorflow_datasets as tfds

from fcn_jax import datasets
from fcn_jax import logging_utils
from fcn_jax.datasets import common


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
      ``synthetic_shapes/tiny``, or the name of a built folder dataset.
    split: Split name, e.g. ``seg11valid``.
    data_dir: TFDS data dir; ``''`` for the TFDS default.
    prepare_synthetic: Generate a ``synthetic_shapes`` dataset that is not
      there yet (it needs no download). Real datasets are never prepared
      here.

  Returns:
    A :class:`SplitSource` whose records keep every image feature
    (``image``, ``segmentation_mask``, ``hha``, ``depth``, ...) as encoded
    bytes.

  Raises:
    FileNotFoundError: Unknown or not prepared; the message gives the
      command that prepares it.
    ValueError: Unknown split.
  """
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
  records = builder.as_data_source(
      split=split, decoders=common.skip_decoding_decoders(encoded))
  return SplitSource(records, f"{dataset_name}:{split}", synthetic)


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
    raise FileNotFoundError(
        f"Dataset {dataset_name} is not prepared in {builder.data_dir}. Run "
        f"`python -m fcn_jax.prepare_data --dataset {dataset_name} "
        + ("--manual_dir <dir with its downloaded archives> "
           if base_name in datasets.MANUAL_BUILDERS else "")
        + (f"--data_dir {data_dir}" if data_dir else "") + "` first, or "
        "point --config.dataset.data_dir at the folder it was prepared in.")
  return builder


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
  metadata = builder.info.metadata or {}
  stem = label_feature.removesuffix("_mask")
  if metadata.get(f"{stem}_class_names"):
    return list(metadata[f"{stem}_class_names"])
  classes = datasets.dataset_classes(metadata)
  return None if classes is None else classes[1]


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
