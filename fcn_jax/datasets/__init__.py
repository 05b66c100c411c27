"""TFDS builders for segmentation data; importing this registers them.

* ``voc_seg`` (:class:`~fcn_jax.datasets.voc_seg.VocSeg`): PASCAL VOC 2012 +
  SBD from the user's archives.
* ``nyud`` (:class:`~fcn_jax.datasets.nyud.Nyud`): NYUDv2, 40 classes,
  colour + HHA + depth, from the reference's ``nyud.tar.gz``.
* ``sift_flow`` (:class:`~fcn_jax.datasets.sift_flow.SiftFlow`): SIFT Flow,
  33 semantic + 3 geometric classes, from ``SiftFlowDataset.zip``.
* ``pascal_context``
  (:class:`~fcn_jax.datasets.pascal_context.PascalContext`): PASCAL-Context,
  59 classes + background, from VOC2010 and the Context annotations.
* ``synthetic_shapes``
  (:class:`~fcn_jax.datasets.synthetic_shapes.SyntheticShapes`): SYNTHETIC
  shapes with the features of ``voc_seg``, generated locally.
* ``folder`` (:mod:`fcn_jax.datasets.folder`): the user's own images and
  masks, built under a name of the user's choosing and opened by that name.

The first four read data the user downloaded (``MANUAL_BUILDERS``): they
are built with ``python -m fcn_jax.prepare_data --dataset NAME --manual_dir
DIR`` and share the options of :class:`~fcn_jax.datasets.manual.ManualBuilder`.
:func:`builder` opens any dataset by name; :func:`dataset_classes` reads the
class count and names every builder records in ``info.metadata``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax import voc
from fcn_jax.datasets import common
from fcn_jax.datasets import folder
from fcn_jax.datasets import manual
from fcn_jax.datasets import nyud
from fcn_jax.datasets import pascal_context
from fcn_jax.datasets import sift_flow
from fcn_jax.datasets import synthetic_shapes
from fcn_jax.datasets import voc_seg

Nyud = nyud.Nyud
PascalContext = pascal_context.PascalContext
SiftFlow = sift_flow.SiftFlow
SyntheticShapes = synthetic_shapes.SyntheticShapes
VocSeg = voc_seg.VocSeg

MANUAL_BUILDERS = {"voc_seg": VocSeg, "nyud": Nyud, "sift_flow": SiftFlow,
                   "pascal_context": PascalContext}
BUILDERS = {**MANUAL_BUILDERS, "synthetic_shapes": SyntheticShapes}


def base_name(dataset_name: str) -> str:
  """``synthetic_shapes/tiny:1.0.0`` -> ``synthetic_shapes``."""
  return dataset_name.split("/")[0].split(":")[0]


def builder(dataset_name: str, data_dir: str | None = None
            ) -> tfds.core.DatasetBuilder:
  """The builder of a dataset by name, prepared or not.

  Args:
    dataset_name: A builder of :data:`BUILDERS` with an optional config and
      version (``synthetic_shapes/tiny``), or the name a folder dataset was
      built under (``my_cats``, ``my_cats:1.0.0``).
    data_dir: TFDS data dir (``~`` expanded); ``None`` or ``''`` for TFDS's
      default.

  Returns:
    The builder; for a folder dataset one read from its files.

  Raises:
    FileNotFoundError: Neither a known builder nor a built folder dataset;
      the message says how to build one.
    ValueError: ``folder`` itself (the user's name is wanted).
  """
  name = base_name(dataset_name)
  # A shell leaves "~" unexpanded in --config.dataset.data_dir=~/...
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if not name:
    raise errors.UserError(
        "config.dataset.name is empty: give the dataset, e.g. "
        "--config.dataset.name=my_cats (the --name of prepare_data).")
  if name in BUILDERS:
    return tfds.builder(dataset_name, data_dir=data_dir or None)
  if name == "folder":
    raise errors.UserError(
        "config.dataset.name=folder: use the --name you gave "
        "`python -m fcn_jax.prepare_data --dataset folder` (e.g. my_cats).")
  try:
    return folder.open_builder(dataset_name, data_dir or None)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"Unknown dataset {dataset_name!r}: not one of {sorted(BUILDERS)} "
        f"(optionally with a config, e.g. 'synthetic_shapes/tiny'), and {e}"
    ) from None


def dataset_classes(info_metadata: Mapping[str, Any] | None
                    ) -> tuple[int, list[str]] | None:
  """``(num_classes, class_names)`` from a builder's ``info.metadata``.

  Datasets built before class names were recorded give VOC's names when
  they have 21 classes (:func:`fcn_jax.voc.class_names`); ``None`` when the
  metadata has no class count at all.
  """
  metadata = info_metadata or {}
  if "num_classes" not in metadata:
    return None
  num_classes = int(metadata["num_classes"])
  names = metadata.get("class_names")
  names = list(names) if names else voc.class_names(num_classes)
  if len(names) != num_classes:
    raise errors.UserError(f"dataset metadata has {num_classes} classes but "
                           f"{len(names)} class names")
  return num_classes, names


def label_class_names(info_metadata: Mapping[str, Any] | None,
                      label_feature: str) -> list[str] | None:
  """The class names of one label feature, from a builder's metadata.

  ``class_names`` names the classes of a dataset's main labels
  (``segmentation_mask``; SIFT Flow's ``semantic_mask``); another label
  feature ``<stem>_mask`` has its own ``<stem>_class_names`` (SIFT Flow's
  ``geometric_class_names``). None when the metadata records none.
  """
  metadata = info_metadata or {}
  stem = label_feature.removesuffix("_mask")
  if metadata.get(f"{stem}_class_names"):
    return list(metadata[f"{stem}_class_names"])
  classes = dataset_classes(metadata)
  return None if classes is None else classes[1]


def interrupted_preparations(builder_: tfds.core.DatasetBuilder) -> list[str]:
  """The ``incomplete.*`` folders an interrupted ``prepare_data`` left
  beside this builder's version folder (TFDS writes there, then renames;
  a killed run leaves them). TFDS never reuses them: they only take space.
  """
  parent = os.path.dirname(os.path.normpath(str(builder_.data_dir)))
  version = os.path.basename(os.path.normpath(str(builder_.data_dir)))
  try:
    names = os.listdir(parent)
  except OSError:
    return []
  return sorted(os.path.join(parent, n) for n in names
                if n.startswith("incomplete.") and n.endswith("_" + version))
