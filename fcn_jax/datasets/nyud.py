"""NYUDv2 (40 classes, colour + HHA + depth) as a TFDS dataset (``nyud``).

Reads the reference's ``nyud.tar.gz`` (docs/reference.md §8.2), the NYUDv2
labelled set as Gupta et al. prepared it for the 40-class task, from
``manual_dir``, as downloaded or extracted, and writes ``array_record``
files that ``tfds.data_source`` and grain read without TensorFlow.

Features (besides ``image_id``, ``height``, ``width``):

* ``image``: the colour PNG, byte for byte (``data/images/img_<id>.png``);
* ``hha``: the HHA PNG, byte for byte, channels in file order
  (``data/hha/img_<id>.png``);
* ``depth``: the raw values of ``data/depth/img_<id>.png`` as a 16-bit
  greyscale PNG (:func:`common.decode_depth`). The reference feeds
  ``log(depth) - 7.844``; that happens at preprocessing, not here;
* ``segmentation_mask``: ``segmentation/img_<id>.mat`` field
  ``segmentation`` minus 1, so the 40 classes are ``0..39`` and void (0)
  becomes 255, as the reference's ``nyud_layers.py`` does.

Splits (the reference's id lists, shipped in ``fcn_jax/datasets/splits/``):
``train`` 381, ``val`` 414, ``trainval`` 795 (train then val; the reference
trains on it but does not ship the file), ``test`` 654.

Run ``python -m fcn_jax.prepare_data --dataset nyud --manual_dir DIR``.
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

ARCHIVE = "nyud.tar.gz"
URL = "http://dl.caffe.berkeleyvision.org/nyud.tar.gz"
GUPTA_URL = "http://people.eecs.berkeley.edu/~sgupta/cvpr13/data.tgz"

NUM_CLASSES = 40
# Raw label values in segmentation/*.mat: 0 = void, 1..40 = the classes.
RAW_LABELS = range(NUM_CLASSES + 1)

# The image features, stored encoded; read them with
# ``decoders=common.skip_decoding_decoders(ENCODED_FEATURES)`` and decode
# with common.decode_image / decode_depth / decode_mask (TFDS's own PIL
# decoder cannot decode the 16-bit depth PNGs).
ENCODED_FEATURES = (common.IMAGE, common.HHA, common.DEPTH, common.MASK)
SPLIT_SIZES = {"train": 381, "val": 414, "trainval": 795, "test": 654}
# The lists of the splits read from files; trainval is train + val.
LISTED_SPLITS = ("train", "val", "test")
CLASSES_FILE = manual.SPLITS_DIR / "nyud_classes.txt"

MANUAL_LAYOUT = f"""\
  <manual_dir>/
    {ARCHIVE}   or its extracted folder (here or up to two levels down):
      data/images/img_<id>.png    colour (RGB PNG)
      data/hha/img_<id>.png       HHA (3-channel PNG)
      data/depth/img_<id>.png     depth (greyscale PNG, 16 bits)
      segmentation/img_<id>.mat   labels, field `segmentation` (0 = void,
                                  1..40 = the classes)"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the FCN reference's NYUDv2 archive (the 1,449 labelled images with
HHA, depth and the 40-class labels, in the layout its data layer reads):
  {ARCHIVE}  from {URL}
and put it (or its extracted folder) in manual_dir. Gupta et al.'s own
release ({GUPTA_URL}) holds the same images but not in this layout: if you
start from it, arrange the colour, HHA and depth PNGs and the 40-class
label .mat files as below yourself.
Layout:
{MANUAL_LAYOUT}
Then run:
  python -m fcn_jax.prepare_data --dataset nyud --manual_dir <manual_dir>
"""

_CITATION = """\
@inproceedings{silberman2012indoor,
  title={Indoor Segmentation and Support Inference from {RGBD} Images},
  author={Silberman, Nathan and Hoiem, Derek and Kohli, Pushmeet and
          Fergus, Rob},
  booktitle={ECCV}, year={2012}}
@inproceedings{gupta2013perceptual,
  title={Perceptual Organization and Recognition of Indoor Scenes from
         {RGB-D} Images},
  author={Gupta, Saurabh and Arbel{\\'a}ez, Pablo and Malik, Jitendra},
  booktitle={CVPR}, year={2013}}
"""

SOURCE = archives.Source(
    name=f"NYUDv2 ({ARCHIVE})", archives=(ARCHIVE,), url=URL,
    marker="data/images",
    member_pattern=re.compile(
        r"(^|/)(data/(images|hha|depth)/img_\d+\.png|"
        r"segmentation/img_\d+\.mat)$"))

# PIL modes of a greyscale PNG of 8 or 16 bits (Pillow's name for 16-bit
# PNGs has changed between versions).
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "L")


def read_class_names(path: epath.Path = CLASSES_FILE) -> list[str]:
  """The 40 class names in output order: the lines before the first blank."""
  lines = path.read_text().splitlines()
  names = lines[:lines.index("")] if "" in lines else lines
  if len(names) != NUM_CLASSES:
    raise errors.UserError(f"{path} names {len(names)} classes; expected "
                           f"{NUM_CLASSES}.")
  return [name.strip() for name in names]


def _paths(image_id: str) -> dict[str, str]:
  return {
      common.IMAGE: f"data/images/img_{image_id}.png",
      common.HHA: f"data/hha/img_{image_id}.png",
      common.DEPTH: f"data/depth/img_{image_id}.png",
      common.MASK: f"segmentation/img_{image_id}.mat",
  }


def read_depth(data: bytes, image_id: str, where: str) -> np.ndarray:
  """Reads a depth PNG as ``uint16 [H, W]`` raw values.

  Raises:
    common.InvalidExampleError: Corrupt file, not greyscale, or values
      outside ``0..65535``.
  """
  image = common.load_image(data, image_id, where, modes=_DEPTH_MODES)
  depth = np.asarray(image)
  if depth.min() < 0 or depth.max() > np.iinfo(np.uint16).max:
    raise common.InvalidExampleError(
        f"{image_id}: {where} has depth values outside 0..65535.")
  return depth.astype(np.uint16)


def labels_to_mask(labels: np.ndarray) -> np.ndarray:
  """Raw labels ``0..40`` -> classes ``0..39`` with void (0) -> 255."""
  labels = np.asarray(labels)
  return np.where(labels == 0, voc.IGNORE_LABEL, labels - 1).astype(
      np.uint8)


def make_example(tree: archives.FileTree, image_id: str,
                 split: str) -> dict:
  """Reads, checks and converts the four files of one NYUDv2 image.

  Raises:
    archives.MissingDataError: A file is missing.
    common.InvalidExampleError: A corrupt image, sizes that differ, or a
      label outside ``0..40``.
  """
  paths = _paths(image_id)
  archives.require_files(tree, paths.values(), image_id, split)
  where = {key: tree.describe(path) for key, path in paths.items()}
  color = tree.read_bytes(paths[common.IMAGE])
  width, height = common.load_image(color, image_id,
                                    where[common.IMAGE]).size
  hha = tree.read_bytes(paths[common.HHA])
  hha_image = common.load_image(hha, image_id, where[common.HHA])
  common.check_same_size(height, width, (hha_image.height, hha_image.width),
                         image_id, where[common.HHA])
  depth = read_depth(tree.read_bytes(paths[common.DEPTH]), image_id,
                     where[common.DEPTH])
  common.check_same_size(height, width, depth.shape, image_id,
                         where[common.DEPTH])
  labels = common.read_mat_labels(tree.read_bytes(paths[common.MASK]),
                                  "segmentation", image_id, where[common.MASK])
  common.check_same_size(height, width, labels.shape, image_id,
                         where[common.MASK])
  common.check_label_values(labels, RAW_LABELS, image_id, where[common.MASK],
                            f"{{0..{NUM_CLASSES}}}")
  return {
      common.IMAGE: color,
      common.HHA: hha,
      common.DEPTH: common.encode_depth_png(depth),
      common.MASK: common.encode_mask_png(labels_to_mask(labels)),
      common.IMAGE_ID: image_id,
      common.HEIGHT: height,
      common.WIDTH: width,
  }


class Nyud(manual.ManualBuilder):
  """NYUDv2, 40 classes, colour + HHA + depth (the FCN paper's NYUD)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train, val, trainval and test of the reference."}
  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  MANUAL_LAYOUT = MANUAL_LAYOUT
  SPLIT_SIZES = SPLIT_SIZES

  def _info(self) -> tfds.core.DatasetInfo:
    return common.LocalDatasetInfo(
        builder=self,
        description=(
            "NYU Depth v2 labelled set, 40-class task of Gupta et al. "
            "(CVPR 2013) as prepared by the FCN reference: colour, HHA and "
            "raw depth PNGs; classes 0..39, 255 = void. Splits train (381), "
            "val (414), trainval (795) and test (654)."),
        features=tfds.features.FeaturesDict({
            common.IMAGE: common.image_feature("png"),
            common.HHA: common.image_feature("png"),
            common.DEPTH: tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint16, encoding_format="png",
                doc="raw depth values of data/depth/img_<id>.png"),
            common.MASK: common.mask_feature(
                "class indices 0..39, 255 = void"),
            common.IMAGE_ID: tfds.features.Text(),
            common.HEIGHT: tfds.features.Scalar(np.int32),
            common.WIDTH: tfds.features.Scalar(np.int32),
        }),
        homepage="https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=common.class_metadata(NUM_CLASSES, read_class_names()),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    tree = self._open(dl_manager, SOURCE, "data")
    ids, list_files = self._read_id_lists("nyud", LISTED_SPLITS)
    both = set(ids["train"]) & set(ids["val"])
    if both:
      raise errors.UserError(
          f"{list_files['train']} and {list_files['val']} share ids "
          f"{sorted(both)[:10]}; trainval would hold them twice.")
    ids["trainval"] = ids["train"] + ids["val"]
    self._check_sizes(ids, {**list_files, "trainval": "train + val"})
    return {split: self._generate_examples(split, split_ids, tree)
            for split, split_ids in ids.items()}

  def _generate_examples(self, split: str, image_ids: list[str],
                         tree: archives.FileTree
                         ) -> Iterator[tuple[str, dict]]:
    return self._checked_examples(
        split, image_ids, lambda image_id: make_example(tree, image_id, split))
