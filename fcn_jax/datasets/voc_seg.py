"""PASCAL VOC 2012 segmentation and SBD as a TFDS dataset (``voc_seg``).

TFDS's own ``voc`` dataset has boxes only. This builder reads the two
archives the FCN paper used (FCN_SPEC.md §8.1) from ``manual_dir`` and writes
``array_record`` files that ``tfds.data_source`` and grain read without
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
import io
import re
import tarfile
from typing import Iterator, Protocol

from absl import logging
from etils import epath
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from fcn_jax import voc
from fcn_jax.datasets import common

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

SEG11VALID_FILE = epath.Path(__file__).parent / "splits" / "seg11valid.txt"

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


class MissingDataError(FileNotFoundError):
  """The archives (or a file they should contain) are not where expected."""


class SplitSizeError(ValueError):
  """An id list does not have the recorded number of ids."""


# --------------------------------------------------------------------------
# Reading files from a folder or an archive.
# --------------------------------------------------------------------------


class _FileTree(Protocol):
  """Read-only access to the files under one root folder."""

  def exists(self, relpath: str) -> bool:
    ...

  def read_bytes(self, relpath: str) -> bytes:
    ...

  def describe(self, relpath: str) -> str:
    """Where ``relpath`` is (or should be), for error messages."""
    ...


@dataclasses.dataclass(frozen=True)
class _FolderTree:
  """Files in an extracted folder."""

  root: epath.Path

  def exists(self, relpath: str) -> bool:
    return (self.root / relpath).is_file()

  def read_bytes(self, relpath: str) -> bytes:
    path = self.root / relpath
    if not path.is_file():
      raise MissingDataError(f"Missing file {path}.")
    return path.read_bytes()

  def describe(self, relpath: str) -> str:
    return str(self.root / relpath)


class _TarTree:
  """Random access to the members of an uncompressed tar under ``prefix``."""

  def __init__(self, archive: epath.Path, prefix: str):
    self._archive = archive
    self._prefix = prefix.rstrip("/") + "/"
    try:
      self._tar = tarfile.open(str(archive), "r:")
      self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, OSError) as e:
      raise MissingDataError(
          f"{archive} is not a readable uncompressed tar ({e}); it may be "
          f"truncated: download it again from {VOC_URL}.") from e

  def exists(self, relpath: str) -> bool:
    return self._prefix + relpath in self._members

  def read_bytes(self, relpath: str) -> bytes:
    member = self._members.get(self._prefix + relpath)
    if member is None:
      raise MissingDataError(f"{self.describe(relpath)} is not in the archive.")
    with self._tar.extractfile(member) as f:
      return f.read()

  def describe(self, relpath: str) -> str:
    return f"{self._archive}:{self._prefix}{relpath}"


def _is_gzip(path: epath.Path) -> bool:
  with path.open("rb") as f:
    return f.read(2) == b"\x1f\x8b"


_SBD_MEMBER = re.compile(
    "^" + re.escape(SBD_ROOT) + r"/(img/[\w\-]+\.jpg|cls/[\w\-]+\.mat|"
    r"train\.txt|val\.txt)$")


def _extract_sbd(archive: epath.Path, extract_dir: epath.Path) -> epath.Path:
  """Extracts what the builder needs from ``benchmark.tgz`` (one pass).

  Only ``img/*.jpg``, ``cls/*.mat`` and the two id lists are written (about
  1.2 GB); a gzip stream cannot be read at random, so this is the fast way.
  A finished extraction is reused.

  Returns:
    The folder holding ``benchmark_RELEASE/dataset``.
  """
  done_marker = extract_dir / ".complete"
  if done_marker.exists():
    logging.info("Reusing the extraction of %s in %s.", archive, extract_dir)
    return extract_dir
  logging.info("Extracting SBD images, masks and lists from %s to %s ...",
               archive, extract_dir)
  extract_dir.mkdir(parents=True, exist_ok=True)
  count = 0
  try:
    with archive.open("rb") as raw, tarfile.open(fileobj=raw,
                                                 mode="r|*") as tar:
      for member in tar:
        if not (member.isfile() and _SBD_MEMBER.match(member.name)):
          continue
        target = extract_dir / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as f:
          target.write_bytes(f.read())
        count += 1
  except (tarfile.TarError, EOFError, OSError, ValueError) as e:
    raise MissingDataError(
        f"{archive} could not be read to the end ({type(e).__name__}: {e}); "
        f"it is probably truncated or corrupt: download it again from "
        f"{SBD_URL}.") from e
  logging.info("Extracted %d files from %s.", count, archive)
  done_marker.write_text(f"{count}\n")
  return extract_dir


def _missing_error(what: str, archive: str, url: str, manual_dir: epath.Path,
                   missing: list[str]) -> MissingDataError:
  return MissingDataError(
      f"{what} not found in manual_dir {manual_dir}.\n"
      f"Missing: {', '.join(missing)}\n"
      f"Get {archive} from {url} and put it (or its extracted folder) in "
      f"manual_dir. Expected layout:\n{MANUAL_LAYOUT}")


def _open_voc(manual_dir: epath.Path) -> _FileTree:
  """Finds VOC2012 as an extracted folder or the trainval tar."""
  folder = manual_dir / VOC_ROOT
  archive = manual_dir / VOC_ARCHIVE
  if folder.is_dir():
    tree = _FolderTree(folder)
  elif archive.is_file():
    if _is_gzip(archive):
      raise MissingDataError(
          f"{archive} is gzip-compressed; the VOC2012 release is an "
          "uncompressed tar. Extract it into manual_dir or use the original "
          "file.")
    tree = _TarTree(archive, VOC_ROOT)
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


def _open_sbd(manual_dir: epath.Path, extract_dir: epath.Path) -> _FileTree:
  """Finds SBD as an extracted folder or ``benchmark.tgz`` (extracted once)."""
  folder = manual_dir / SBD_ROOT
  archive = manual_dir / SBD_ARCHIVE
  if folder.is_dir():
    tree = _FolderTree(folder)
  elif archive.is_file():
    tree = _FolderTree(_extract_sbd(archive, extract_dir) / SBD_ROOT)
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


def parse_id_list(text: str, where: str) -> list[str]:
  """Reads one id per line, keeping the order; duplicates are an error."""
  ids = [line.strip() for line in text.splitlines() if line.strip()]
  if len(set(ids)) != len(ids):
    seen, dups = set(), []
    for i in ids:
      if i in seen:
        dups.append(i)
      seen.add(i)
    raise ValueError(f"{where} lists these ids more than once: {dups[:10]}")
  return ids


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
  try:
    mat = scipy.io.loadmat(io.BytesIO(data), struct_as_record=False,
                           squeeze_me=True)
  except Exception as e:  # scipy raises several types for corrupt files.
    raise common.InvalidExampleError(
        f"{image_id}: cannot read {where} ({type(e).__name__}: {e}).") from e
  gt = mat.get("GTcls")
  segmentation = getattr(gt, "Segmentation", None)
  if segmentation is None:
    raise common.InvalidExampleError(
        f"{image_id}: {where} has no GTcls.Segmentation (keys: "
        f"{sorted(k for k in mat if not k.startswith('__'))}).")
  segmentation = np.asarray(segmentation)
  if not np.issubdtype(segmentation.dtype, np.integer):
    if (not np.issubdtype(segmentation.dtype, np.floating)
        or not np.all(segmentation == np.round(segmentation))):
      raise common.InvalidExampleError(
          f"{image_id}: {where} GTcls.Segmentation is {segmentation.dtype} "
          "with non-integer values.")
    segmentation = segmentation.astype(np.int64)
  return segmentation


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
  wrong = [f"  {name}: expected {expected[name]:,} ids, found "
           f"{len(entries[name]):,} (from {list_files[name]})"
           for name in expected if len(entries[name]) != expected[name]]
  if wrong:
    raise SplitSizeError(
        "The id lists do not have the sizes of the official releases:\n"
        + "\n".join(wrong) + "\nThe archives may be incomplete or a different "
        "release. To build from these lists anyway, pass "
        "--no_check_split_sizes to fcn_jax.prepare_data "
        "(VocSeg(check_split_sizes=False)).")


class VocSeg(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation + SBD, with the FCN and train_aug splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "VOC2012, SBD, seg11valid and train_aug splits."}
  # TFDS finds this file through `importlib_resources`, which it does not
  # declare as a dependency; naming it here avoids that import.
  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, *, skip_invalid: bool = False,
               check_split_sizes: bool = True,
               seg11valid_file: str | None = None, **kwargs):
    """Creates the builder.

    Args:
      skip_invalid: Skip (and count, and log by id) examples whose image is
        corrupt or whose mask is invalid, instead of stopping with an error.
        Missing files always stop the build.
      check_split_sizes: Check each id list against :data:`SPLIT_SIZES`.
      seg11valid_file: Id list for ``seg11valid``; defaults to the list
        shipped in ``fcn_jax/datasets/splits/seg11valid.txt``.
      **kwargs: Passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``,
        ``file_format``, ...).
    """
    self._skip_invalid = skip_invalid
    self._check_split_sizes = check_split_sizes
    self._seg11valid_file = epath.Path(seg11valid_file or SEG11VALID_FILE)
    self.skipped_ids: dict[str, list[str]] = {}
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("PASCAL VOC 2012 semantic segmentation and the Semantic "
                     "Boundaries Dataset (SBD): 21 classes (0 = background), "
                     "255 = void. Splits voc2012_train/val, sbd_train/val, "
                     "seg11valid (FCN paper validation) and train_aug."),
        features=common.segmentation_features(),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            synthetic=False, num_classes=common.NUM_CLASSES,
            class_names=list(voc.VOC_CLASSES),
            ignore_label=common.IGNORE_LABEL),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = epath.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS: manual_dir missing or empty.
      raise MissingDataError(
          str(e).split("\n", 1)[0] + "\n" + MANUAL_DOWNLOAD_INSTRUCTIONS
      ) from e
    voc = _open_voc(manual_dir)
    sbd = _open_sbd(manual_dir, epath.Path(dl_manager.download_dir)
                    / "extracted" / "voc_seg_sbd")
    list_paths = {
        "voc2012_train": (voc, "ImageSets/Segmentation/train.txt"),
        "voc2012_val": (voc, "ImageSets/Segmentation/val.txt"),
        "sbd_train": (sbd, "train.txt"),
        "sbd_val": (sbd, "val.txt"),
        "seg11valid": (_FolderTree(self._seg11valid_file.parent),
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
    if self._check_split_sizes:
      check_split_sizes(entries, list_files)
    trees = {VOC2012: voc, SBD: sbd}
    return {name: self._generate_examples(name, split_entries, trees)
            for name, split_entries in entries.items()}

  def _generate_examples(self, split: str, entries: list[_Entry],
                         trees: dict[str, _FileTree]
                         ) -> Iterator[tuple[str, dict]]:
    skipped = self.skipped_ids.setdefault(split, [])
    for entry in entries:
      tree = trees[entry.source]
      image_path, mask_path = (_voc_paths if entry.source == VOC2012
                               else _sbd_paths)(entry.image_id)
      for path in (image_path, mask_path):
        if not tree.exists(path):
          raise MissingDataError(
              f"{entry.image_id} (split {split}) is listed but "
              f"{tree.describe(path)} is missing; the archive is incomplete.")
      mask_where = tree.describe(mask_path)
      try:
        if entry.source == VOC2012:
          mask = common.decode_palette_png(tree.read_bytes(mask_path),
                                           entry.image_id)
        else:
          mask = read_sbd_mask(tree.read_bytes(mask_path), entry.image_id,
                               mask_where)
        example = common.make_example(entry.image_id,
                                      tree.read_bytes(image_path), mask,
                                      entry.source, mask_where)
      except common.InvalidExampleError as e:
        if not self._skip_invalid:
          raise common.InvalidExampleError(
              f"{e} (split {split}). Fix or replace the file, or build with "
              "--skip_invalid to leave such examples out.") from e
        logging.warning("Skipping %s in %s: %s", entry.image_id, split, e)
        skipped.append(entry.image_id)
        continue
      yield entry.image_id, example
    if skipped:
      logging.warning("Skipped %d invalid examples in %s: %s", len(skipped),
                      split, ", ".join(skipped))
