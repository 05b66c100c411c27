"""PASCAL VOC 2012 segmentation and SBD as a TFDS dataset (``voc_seg``).

TFDS's own ``voc`` dataset has boxes only. This builder reads the two
archives the FCN paper used (docs/reference.md §8.1) from ``manual_dir`` and
writes ``array_record`` files that ``tfds.data_source`` and grain read without
TensorFlow.

Splits (sizes recorded in :data:`SPLIT_SIZES` and checked when building):

=============== ====== =====================================================
``voc2012_train``  1464 VOC2012 ``ImageSets/Segmentation/train.txt``
``voc2012_val``    1449 VOC2012 ``ImageSets/Segmentation/val.txt``
``sbd_train``      8498 SBD ``dataset/train.txt`` (the paper's training set)
``sbd_val``        2857 SBD ``dataset/val.txt``
``seg11valid``      736 VOC2011 seg val minus SBD train (the paper's val set;
                        images and masks from the VOC2012 tree)
``train_aug``     10582 SBD train + SBD val + VOC2012 train - VOC2012 val
                        (the "augmented" set of DeepLab and later work)
=============== ====== =====================================================

In ``train_aug`` an id that is in VOC2012 train takes its VOC2012 image and
mask (which has the void border); every other id takes SBD's. The
``label_source`` feature records which.

Run ``python -m fcn_jax.prepare_data --dataset voc_seg --manual_dir DIR``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fcn_jax import voc
from fcn_jax.datasets import archives
from fcn_jax.datasets import common
from fcn_jax.datasets import manual

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"
VOC_URL = ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
           "VOCtrainval_11-May-2012.tar")
SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
           "semantic_contours/benchmark.tgz")
# Folders inside the archives (and inside manual_dir when extracted).
VOC_ROOT = "VOCdevkit/VOC2012"
SBD_ROOT = "benchmark_RELEASE/dataset"

SPLIT_SIZES = {
    "voc2012_train": 1464,
    "voc2012_val": 1449,
    "sbd_train": 8498,
    "sbd_val": 2857,
    "seg11valid": 736,
    "train_aug": 10582,
}

SEG11VALID_FILE = manual.SPLITS_DIR / "seg11valid.txt"

MANUAL_LAYOUT = f"""\
  <manual_dir>/
    {VOC_ARCHIVE}   or its extracted {VOC_ROOT}/
                                  (JPEGImages/, SegmentationClass/,
                                  ImageSets/Segmentation/{{train,val}}.txt)
    {SBD_ARCHIVE}                 or its extracted {SBD_ROOT}/
                                  (img/, cls/, train.txt, val.txt)"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the two archives and put them (or their extracted folders) in
manual_dir:
  {VOC_ARCHIVE}  from {VOC_URL}
  {SBD_ARCHIVE}  (Semantic Boundaries Dataset) from {SBD_URL}
Layout:
{MANUAL_LAYOUT}
Then run:
  python -m fcn_jax.prepare_data --dataset voc_seg --manual_dir <manual_dir>
"""

_CITATION = """\
@article{everingham2010pascal,
  title={The {PASCAL} Visual Object Classes ({VOC}) Challenge},
  author={Everingham, M. and Van Gool, L. and Williams, C. K. I. and Winn, J.
          and Zisserman, A.},
  journal={International Journal of Computer Vision}, volume={88},
  number={2}, pages={303--338}, year={2010}}
@inproceedings{hariharan2011semantic,
  title={Semantic Contours from Inverse Detectors},
  author={Hariharan, Bharath and Arbel{\\'a}ez, Pablo and Bourdev, Lubomir and
          Maji, Subhransu and Malik, Jitendra},
  booktitle={ICCV}, year={2011}}
"""

VOC2012 = "voc2012"
SBD = "sbd"


MissingDataError = archives.MissingDataError
SplitSizeError = manual.SplitSizeError
parse_id_list = manual.parse_id_list


# --------------------------------------------------------------------------
# Finding the two releases in manual_dir.
# --------------------------------------------------------------------------


_SBD_MEMBER = re.compile(
    "^" + re.escape(SBD_ROOT) + r"/(img/[\w\-]+\.jpg|cls/[\w\-]+\.mat|"
    r"train\.txt|val\.txt)$")


def _missing_error(what: str, archive: str, url: str, manual_dir: epath.Path,
                   missing: list[str]) -> MissingDataError:
  return MissingDataError(
      f"{what} not found in manual_dir {manual_dir}.\n"
      f"Missing: {', '.join(missing)}\n"
      f"Get {archive} from {url} and put it (or its extracted folder) in "
      f"manual_dir. Expected layout:\n{MANUAL_LAYOUT}")


def _open_voc(manual_dir: epath.Path) -> archives.FileTree:
  """Finds VOC2012 as an extracted folder or the trainval tar."""
  folder = manual_dir / VOC_ROOT
  archive = manual_dir / VOC_ARCHIVE
  if folder.is_dir():
    tree = archives.FolderTree(folder)
  elif archive.is_file():
    if archives.magic(archive) == "gzip":
      raise MissingDataError(
          f"{archive} is gzip-compressed; the VOC2012 release is an "
          "uncompressed tar. Extract it into manual_dir or use the original "
          "file.")
    tree = archives.SubTree(archives.TarTree(archive, VOC_URL),
                            VOC_ROOT + "/")
  else:
    raise _missing_error("PASCAL VOC 2012", VOC_ARCHIVE, VOC_URL, manual_dir,
                         [str(archive), f"or {folder}/"])
  needed = ["ImageSets/Segmentation/train.txt",
            "ImageSets/Segmentation/val.txt"]
  missing = [tree.describe(p) for p in needed if not tree.exists(p)]
  if missing:
    raise _missing_error("The VOC2012 segmentation lists were",
                         VOC_ARCHIVE, VOC_URL, manual_dir, missing)
  return tree


def _open_sbd(manual_dir: epath.Path,
              extract_dir: epath.Path) -> archives.FileTree:
  """Finds SBD as an extracted folder or ``benchmark.tgz`` (extracted once).

  Only ``img/*.jpg``, ``cls/*.mat`` and the two id lists are extracted
  (about 1.2 GB).
  """
  folder = manual_dir / SBD_ROOT
  archive = manual_dir / SBD_ARCHIVE
  if folder.is_dir():
    tree = archives.FolderTree(folder)
  elif archive.is_file():
    tree = archives.SubTree(archives.FolderTree(archives.extract_members(
        archive, extract_dir, _SBD_MEMBER, SBD_URL), archive), SBD_ROOT + "/")
  else:
    raise _missing_error("SBD (Semantic Boundaries Dataset)", SBD_ARCHIVE,
                         SBD_URL, manual_dir, [str(archive), f"or {folder}/"])
  missing = [tree.describe(p) for p in ("train.txt", "val.txt")
             if not tree.exists(p)]
  if missing:
    raise _missing_error("The SBD lists were", SBD_ARCHIVE, SBD_URL,
                         manual_dir, missing)
  return tree


# --------------------------------------------------------------------------
# Ids, masks and splits.
# --------------------------------------------------------------------------


def read_sbd_mask(data: bytes, image_id: str, where: str) -> np.ndarray:
  """Reads ``GTcls.Segmentation`` from an SBD ``cls/<id>.mat`` file.

  Args:
    data: The ``.mat`` file's bytes.
    image_id: Named in errors.
    where: The file, named in errors.

  Returns:
    The ``[H, W]`` integer mask, values unchecked (see
    :func:`common.check_mask_values`).

  Raises:
    common.InvalidExampleError: Unreadable file, no ``GTcls.Segmentation``,
      or non-integer values.
  """
  return common.read_mat_labels(data, "GTcls.Segmentation", image_id, where)


@dataclasses.dataclass(frozen=True)
class _Entry:
  image_id: str
  source: str  # VOC2012 or SBD.


def _voc_paths(image_id: str) -> tuple[str, str]:
  return f"JPEGImages/{image_id}.jpg", f"SegmentationClass/{image_id}.png"


def _sbd_paths(image_id: str) -> tuple[str, str]:
  return f"img/{image_id}.jpg", f"cls/{image_id}.mat"


def build_split_entries(voc_train: list[str], voc_val: list[str],
                        sbd_train: list[str], sbd_val: list[str],
                        seg11valid: list[str]) -> dict[str, list[_Entry]]:
  """Which ids, from which source, make up each split."""
  voc_train_set = set(voc_train)
  train_aug = sorted((set(sbd_train) | set(sbd_val) | voc_train_set)
                     - set(voc_val))
  return {
      "voc2012_train": [_Entry(i, VOC2012) for i in voc_train],
      "voc2012_val": [_Entry(i, VOC2012) for i in voc_val],
      "sbd_train": [_Entry(i, SBD) for i in sbd_train],
      "sbd_val": [_Entry(i, SBD) for i in sbd_val],
      "seg11valid": [_Entry(i, VOC2012) for i in seg11valid],
      "train_aug": [_Entry(i, VOC2012 if i in voc_train_set else SBD)
                    for i in train_aug],
  }


def check_split_sizes(entries: dict[str, list], list_files: dict[str, str],
                      expected: dict[str, int] = SPLIT_SIZES) -> None:
  """Raises :class:`SplitSizeError` unless every split has its recorded size."""
  manual.check_split_sizes(entries, list_files, expected)


class VocSeg(manual.ManualBuilder):
  """PASCAL VOC 2012 segmentation + SBD, with the FCN and train_aug splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "VOC2012, SBD, seg11valid and train_aug splits."}
  # TFDS finds this file through `importlib_resources`, which it does not
  # declare as a dependency; naming it here avoids that import.
  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  MANUAL_LAYOUT = MANUAL_LAYOUT
  SPLIT_SIZES = SPLIT_SIZES

  def __init__(self, *, seg11valid_file: str | None = None, **kwargs):
    """Creates the builder.

    Args:
      seg11valid_file: Id list for ``seg11valid``; defaults to the list
        shipped in ``fcn_jax/datasets/splits/seg11valid.txt``.
      **kwargs: Passed to :class:`manual.ManualBuilder` (``skip_invalid``,
        ``check_split_sizes``, ``data_dir``, ...).
    """
    self._seg11valid_file = epath.Path(seg11valid_file or SEG11VALID_FILE)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.LocalDatasetInfo(
        builder=self,
        description=("PASCAL VOC 2012 semantic segmentation and the Semantic "
                     "Boundaries Dataset (SBD): 21 classes (0 = background), "
                     "255 = void. Splits voc2012_train/val, sbd_train/val, "
                     "seg11valid (FCN paper validation) and train_aug."),
        features=common.segmentation_features(),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=common.class_metadata(common.NUM_CLASSES, voc.VOC_CLASSES),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = self._manual_dir(dl_manager)
    voc_tree = _open_voc(manual_dir)
    sbd_tree = _open_sbd(manual_dir, self._extract_dir(dl_manager, "sbd"))
    list_paths = {
        "voc2012_train": (voc_tree, "ImageSets/Segmentation/train.txt"),
        "voc2012_val": (voc_tree, "ImageSets/Segmentation/val.txt"),
        "sbd_train": (sbd_tree, "train.txt"),
        "sbd_val": (sbd_tree, "val.txt"),
        "seg11valid": (archives.FolderTree(self._seg11valid_file.parent),
                       self._seg11valid_file.name),
    }
    list_files = {name: tree.describe(path)
                  for name, (tree, path) in list_paths.items()}
    lists = {name: parse_id_list(tree.read_bytes(path).decode(),
                                 list_files[name])
             for name, (tree, path) in list_paths.items()}
    entries = build_split_entries(
        voc_train=lists["voc2012_train"], voc_val=lists["voc2012_val"],
        sbd_train=lists["sbd_train"], sbd_val=lists["sbd_val"],
        seg11valid=lists["seg11valid"])
    list_files["train_aug"] = "SBD train+val, VOC2012 train minus VOC2012 val"
    self._check_sizes(entries, list_files)
    trees = {VOC2012: voc_tree, SBD: sbd_tree}
    return {name: self._generate_examples(name, split_entries, trees)
            for name, split_entries in entries.items()}

  def _generate_examples(self, split: str, entries: list[_Entry],
                         trees: dict[str, archives.FileTree]
                         ) -> Iterator[tuple[str, dict]]:
    sources = {entry.image_id: entry.source for entry in entries}

    def make_example(image_id: str) -> dict:
      source = sources[image_id]
      tree = trees[source]
      image_path, mask_path = (_voc_paths if source == VOC2012
                               else _sbd_paths)(image_id)
      archives.require_files(tree, (image_path, mask_path), image_id, split)
      mask_where = tree.describe(mask_path)
      if source == VOC2012:
        mask = common.decode_palette_png(tree.read_bytes(mask_path), image_id)
      else:
        mask = read_sbd_mask(tree.read_bytes(mask_path), image_id, mask_where)
      return common.make_example(image_id, tree.read_bytes(image_path), mask,
                                 source, mask_where)

    return self._checked_examples(split, [e.image_id for e in entries],
                                  make_example)
