"""SIFT Flow (33 semantic + 3 geometric classes) as a TFDS dataset.

Reads ``SiftFlowDataset.zip`` (docs/reference.md §8.3), as downloaded or
extracted, from ``manual_dir`` and writes ``array_record`` files that
``tfds.data_source`` and grain read without TensorFlow. Registered as
``sift_flow``.

Features (besides ``image_id``, ``height``, ``width``):

* ``image``: the 256x256 JPEG, byte for byte
  (``Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg``);
* ``semantic_mask``: ``SemanticLabels/.../<id>.mat`` field ``S`` minus 1:
  classes ``0..32``, void (0) -> 255;
* ``geometric_mask``: ``GeoLabels/.../<id>.mat`` field ``S`` with -1 first
  set to 0, then minus 1: classes ``0..2`` (sky, horizontal, vertical),
  void (-1 and 0) -> 255; both as the reference's ``siftflow_layers.py``.

Splits (the reference's id lists, shipped in ``fcn_jax/datasets/splits/``):
``trainval`` 2486 and ``test`` 200. The two unannotated images
(``highway_bost181``, ``street_urb506``) are in neither (docs/reference.md
§1), so the paper's 2,488 training images are 2,486 here. Three classes
(cow, desert, moon) never occur in ``test``; the metadata lists them
(``classes_absent_from_test``) so evaluation can leave them out of the
means, as the reference's class list says.

Run ``python -m fcn_jax.prepare_data --dataset sift_flow --manual_dir DIR``.
"""

from __future__ import annotations

import re
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax import voc
from fcn_jax.datasets import archives
from fcn_jax.datasets import common
from fcn_jax.datasets import manual

ARCHIVE = "SiftFlowDataset.zip"
URL = "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip"
CATEGORY_DIR = "spatial_envelope_256x256_static_8outdoorcategories"

NUM_CLASSES = 33
NUM_GEOMETRIC_CLASSES = 3
# Raw values in the .mat files: semantic 0 = void, 1..33; geometric -1 and
# 0 = void, 1..3.
RAW_SEMANTIC_LABELS = range(NUM_CLASSES + 1)
RAW_GEOMETRIC_LABELS = range(-1, NUM_GEOMETRIC_CLASSES + 1)

# The image features, stored encoded; read them with
# ``decoders=common.skip_decoding_decoders(ENCODED_FEATURES)``.
ENCODED_FEATURES = (common.IMAGE, common.SEMANTIC_MASK,
                    common.GEOMETRIC_MASK)
SPLIT_SIZES = {"trainval": 2486, "test": 200}
CLASSES_FILE = manual.SPLITS_DIR / "siftflow_classes.txt"
# From the note in the reference's class list (siftflow_classes.txt).
CLASSES_ABSENT_FROM_TEST = ("cow", "desert", "moon")
UNANNOTATED_IMAGES = ("highway_bost181", "street_urb506")

MANUAL_LAYOUT = f"""\
  <manual_dir>/
    {ARCHIVE}   or its extracted folder (here or up to two
                          levels down):
      Images/<C>/<id>.jpg
      SemanticLabels/<C>/<id>.mat   field `S`
      GeoLabels/<C>/<id>.mat        field `S`
    where <C> is {CATEGORY_DIR}"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the SIFT Flow dataset (Liu et al.; Tighe and Lazebnik's release):
  {ARCHIVE}  from {URL}
and put it (or its extracted folder) in manual_dir.
Layout:
{MANUAL_LAYOUT}
Then run:
  python -m fcn_jax.prepare_data --dataset sift_flow --manual_dir <manual_dir>
"""

_CITATION = """\
@article{liu2011sift,
  title={{SIFT} Flow: Dense Correspondence across Scenes and its
         Applications},
  author={Liu, Ce and Yuen, Jenny and Torralba, Antonio},
  journal={IEEE TPAMI}, volume={33}, number={5}, pages={978--994},
  year={2011}}
@inproceedings{tighe2010superparsing,
  title={{SuperParsing}: Scalable Nonparametric Image Parsing with
         Superpixels},
  author={Tighe, Joseph and Lazebnik, Svetlana},
  booktitle={ECCV}, year={2010}}
"""

SOURCE = archives.Source(
    name=f"SIFT Flow ({ARCHIVE})", archives=(ARCHIVE,), url=URL,
    marker=f"Images/{CATEGORY_DIR}",
    member_pattern=re.compile(
        r"(^|/)(Images/" + CATEGORY_DIR + r"/[\w\-]+\.jpg|"
        r"(SemanticLabels|GeoLabels)/" + CATEGORY_DIR + r"/[\w\-]+\.mat)$"))


def read_class_names(path: epath.Path = CLASSES_FILE
                     ) -> tuple[list[str], list[str]]:
  """The semantic and the geometric class names, in output order.

  The file lists them as ``NN name`` lines, semantic ones after a line
  starting ``Semantic`` and geometric ones after one starting ``Geometric``.
  """
  names: dict[str, list[str]] = {"Semantic": [], "Geometric": []}
  section = None
  for line in path.read_text().splitlines():
    for title in names:
      if line.startswith(title):
        section = title
    match = re.fullmatch(r"(\d+) (.+)", line.strip())
    if match and section:
      names[section].append(match.group(2).strip())
  if (len(names["Semantic"]) != NUM_CLASSES
      or len(names["Geometric"]) != NUM_GEOMETRIC_CLASSES):
    raise errors.UserError(
        f"{path} names {len(names['Semantic'])} semantic and "
        f"{len(names['Geometric'])} geometric classes; expected "
        f"{NUM_CLASSES} and {NUM_GEOMETRIC_CLASSES}.")
  return names["Semantic"], names["Geometric"]


def _paths(image_id: str) -> dict[str, str]:
  return {
      common.IMAGE: f"Images/{CATEGORY_DIR}/{image_id}.jpg",
      common.SEMANTIC_MASK: f"SemanticLabels/{CATEGORY_DIR}/{image_id}.mat",
      common.GEOMETRIC_MASK: f"GeoLabels/{CATEGORY_DIR}/{image_id}.mat",
  }


def semantic_to_mask(labels: np.ndarray) -> np.ndarray:
  """Raw semantic labels ``0..33`` -> ``0..32``, void (0) -> 255."""
  labels = np.asarray(labels)
  return np.where(labels == 0, voc.IGNORE_LABEL, labels - 1).astype(
      np.uint8)


def geometric_to_mask(labels: np.ndarray) -> np.ndarray:
  """Raw geometric labels ``-1..3`` -> ``0..2``, void (-1, 0) -> 255."""
  labels = np.asarray(labels)
  return np.where(labels <= 0, voc.IGNORE_LABEL, labels - 1).astype(
      np.uint8)


def make_example(tree: archives.FileTree, image_id: str, split: str) -> dict:
  """Reads, checks and converts the image and both labellings of one id.

  Raises:
    archives.MissingDataError: A file is missing.
    common.InvalidExampleError: A corrupt image, sizes that differ, or a
      label outside the dataset's values.
  """
  paths = _paths(image_id)
  archives.require_files(tree, paths.values(), image_id, split)
  where = {key: tree.describe(path) for key, path in paths.items()}
  jpeg = tree.read_bytes(paths[common.IMAGE])
  width, height = common.load_image(jpeg, image_id, where[common.IMAGE]).size
  masks = {}
  for key, raw_values, allowed_text, to_mask in (
      (common.SEMANTIC_MASK, RAW_SEMANTIC_LABELS, f"{{0..{NUM_CLASSES}}}",
       semantic_to_mask),
      (common.GEOMETRIC_MASK, RAW_GEOMETRIC_LABELS,
       f"{{-1..{NUM_GEOMETRIC_CLASSES}}}", geometric_to_mask)):
    labels = common.read_mat_labels(tree.read_bytes(paths[key]), "S",
                                    image_id, where[key])
    common.check_same_size(height, width, labels.shape, image_id, where[key])
    common.check_label_values(labels, raw_values, image_id, where[key],
                              allowed_text)
    masks[key] = common.encode_mask_png(to_mask(labels))
  return {
      common.IMAGE: jpeg,
      **masks,
      common.IMAGE_ID: image_id,
      common.HEIGHT: height,
      common.WIDTH: width,
  }


class SiftFlow(manual.ManualBuilder):
  """SIFT Flow: 33 semantic and 3 geometric classes (the FCN paper's)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "trainval and test of the reference."}
  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  MANUAL_LAYOUT = MANUAL_LAYOUT
  SPLIT_SIZES = SPLIT_SIZES

  def _info(self) -> tfds.core.DatasetInfo:
    semantic, geometric = read_class_names()
    return common.LocalDatasetInfo(
        builder=self,
        description=(
            "SIFT Flow: 256x256 outdoor scenes labelled with 33 semantic "
            "classes (0..32) and 3 geometric ones (0..2: sky, horizontal, "
            "vertical); 255 = void. Splits trainval (2486) and test (200) "
            "of the FCN reference; cow, desert and moon never occur in "
            "test."),
        features=tfds.features.FeaturesDict({
            common.IMAGE: common.image_feature("jpeg"),
            common.SEMANTIC_MASK: common.mask_feature(
                "semantic class indices 0..32, 255 = void"),
            common.GEOMETRIC_MASK: common.mask_feature(
                "geometric class indices 0..2, 255 = void"),
            common.IMAGE_ID: tfds.features.Text(),
            common.HEIGHT: tfds.features.Scalar(np.int32),
            common.WIDTH: tfds.features.Scalar(np.int32),
        }),
        homepage="https://www.cs.unc.edu/~jtighe/Papers/ECCV10/",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=common.class_metadata(
            NUM_CLASSES, semantic,
            geometric_num_classes=NUM_GEOMETRIC_CLASSES,
            geometric_class_names=geometric,
            classes_absent_from_test=list(CLASSES_ABSENT_FROM_TEST)),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    tree = self._open(dl_manager, SOURCE, "files")
    ids, list_files = self._read_id_lists("siftflow", SPLIT_SIZES)
    for split, split_ids in ids.items():
      unannotated = sorted(set(split_ids) & set(UNANNOTATED_IMAGES))
      if unannotated:
        raise errors.UserError(
            f"{list_files[split]} lists {', '.join(unannotated)}, which have "
            "no annotation (docs/reference.md §1); remove them from the list.")
    self._check_sizes(ids, list_files)
    return {split: self._generate_examples(split, split_ids, tree)
            for split, split_ids in ids.items()}

  def _generate_examples(self, split: str, image_ids: list[str],
                         tree: archives.FileTree
                         ) -> Iterator[tuple[str, dict]]:
    return self._checked_examples(
        split, image_ids, lambda image_id: make_example(tree, image_id, split))
