r"""Your own segmentation data from a folder, as a TFDS dataset of your naming.

Layout of the folder (``--manual_dir``)::

  DIR/
    images/<name>.jpg | .jpeg | .png   the photos (RGB; greyscale is widened)
    masks/<name>.png                   one class index per pixel: a palette PNG
                                       (its indices, never its colours) or an
                                       8-bit greyscale PNG; 255 = void
    classes.txt                        optional: one class name a line, the
                                       index is the line number (from 0)
    splits/<split>.txt                 optional: the names of each split, one
                                       a line (e.g. train.txt, val.txt)

``python -m fcn_jax.prepare_data --dataset folder --manual_dir DIR --name
NAME`` checks every file first and lists EVERY problem (images without masks,
masks without images, an image and mask of different sizes, mask values that
are not a class index or 255, unreadable or unsupported files, names listed
in a split file that are not there); ``--skip_invalid`` leaves those examples
out and lists them. Then it writes ``array_record`` files under the name you
chose (``<data_dir>/NAME/<version>/``), so several datasets live side by side
and training, evaluation and prediction open them with
``--config.dataset.name=NAME --config.dataset.data_dir=...``
(:func:`open_builder`).

Classes: ``classes.txt`` names them; without it, ``--num_classes`` gives
their number (names ``class_<i>``); without either, the number is the largest
index found in the masks plus one. The dataset's ``info.metadata`` records
``num_classes`` and ``class_names`` (as every fcn_jax builder does).

Splits: the files in ``splits/``; without them, each name goes to ``val``
with probability ``val_fraction`` (default 0.1) by a seeded hash of the name,
else to ``train``. The hash makes the split stable: adding images never moves
an existing one between train and val. The method, fraction and seed are
recorded in the metadata.

Rebuilding: the metadata records a fingerprint of every file's content and of
the options. Running prepare_data again on unchanged files does nothing;
after you add, remove or edit files it writes a NEW version beside the old
one (1.0.0, 1.1.0, ...) and says so. Reading without a version takes the
newest; ``NAME:1.0.0`` pins one. Nothing is ever mixed or overwritten.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Sequence

from etils import epath
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax import voc
from fcn_jax.datasets import common
# The scan (reading and checking the folder) is its own module; the names
# the callers of this one use are re-exported.
from fcn_jax.datasets.folder_scan import (
    DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, LAYOUT, Example,
    FolderDatasetError, FolderOptions, FolderScan, hash_split, read_mask,
    scan_folder)

__all__ = [
    "DEFAULT_SPLIT_SEED", "DEFAULT_VAL_FRACTION", "FIRST_VERSION", "LAYOUT",
    "FolderDataset", "FolderDatasetError", "FolderOptions", "PrepareResult",
    "built_versions", "builder_class", "check_name",
    "hash_split", "open_builder", "prepare", "read_mask", "scan_folder"]

FIRST_VERSION = "1.0.0"
LABEL_SOURCE = "folder"
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


# --------------------------------------------------------------------------
# The TFDS builder.
# --------------------------------------------------------------------------


class FolderDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The examples of a :class:`FolderScan`, in the voc_seg features.

  Not used directly: :func:`builder_class` gives it the user's name and a
  version; ``image`` holds each image file's bytes unchanged (JPEG or PNG).
  """

  VERSION = tfds.core.Version(FIRST_VERSION)
  RELEASE_NOTES = {FIRST_VERSION: "Built from a folder of images and masks."}
  # TFDS finds this file through `importlib_resources`, which it does not
  # declare as a dependency; naming it here avoids that import.
  code_path = epath.Path(__file__)

  def __init__(self, *, scan: FolderScan, **kwargs):
    self._scan = scan
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    scan = self._scan
    return common.LocalDatasetInfo(
        builder=self,
        description=(f"Folder dataset {self.name} from {scan.root}: "
                     f"{scan.num_classes} classes "
                     f"({', '.join(scan.class_names[:8])}"
                     f"{', ...' if scan.num_classes > 8 else ''}), "
                     f"{voc.IGNORE_LABEL} = void."),
        features=common.segmentation_features(
            num_classes=scan.num_classes, image_format=None),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(scan.metadata()),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The scan has every file.
    return {split: self._generate_examples(examples)
            for split, examples in self._scan.splits.items()}

  def _generate_examples(self, examples: Sequence[Example]
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    for example in examples:
      mask = read_mask(example.mask_path.read_bytes(), str(example.mask_path))
      yield example.image_id, common.make_example(
          example.image_id, example.image_path.read_bytes(), mask,
          LABEL_SOURCE, str(example.mask_path),
          num_classes=self._scan.num_classes)


def builder_class(name: str, version: str = FIRST_VERSION
                  ) -> type[FolderDataset]:
  """A :class:`FolderDataset` subclass named ``name`` at ``version``.

  It is not registered with TFDS (readers open the files, see
  :func:`open_builder`), so any number can exist in one process.
  """
  check_name(name)
  class_name = "".join(part.capitalize() for part in name.split("_")) or "X"
  return type(class_name, (FolderDataset,), {
      "name": name, "VERSION": tfds.core.Version(version),
      "RELEASE_NOTES": {version: FolderDataset.RELEASE_NOTES[FIRST_VERSION]},
      "__module__": __name__}, skip_registration=True)


def check_name(name: str) -> None:
  """Rejects names TFDS cannot use or that belong to another dataset.

  Raises:
    FolderDatasetError: With the rule and the fix.
  """
  if not _NAME_PATTERN.fullmatch(name or ""):
    raise FolderDatasetError(
        f"--name {name!r}: a dataset name is lower-case letters, digits and "
        "'_', starting with a letter (e.g. my_cats).")
  # fcn_jax's own builders are registered with TFDS (importing this module
  # imports the fcn_jax.datasets package, which registers them): the
  # registry below covers them without importing the package (a cycle).
  taken = name == "folder"
  if not taken:
    try:
      tfds.builder_cls(name)
      taken = True
    except tfds.core.registered.DatasetNotFoundError:
      pass
  if taken:
    raise FolderDatasetError(
        f"--name {name}: that is the name of a TFDS dataset; choose another "
        "(e.g. my_{name}).")


# --------------------------------------------------------------------------
# Building and opening.
# --------------------------------------------------------------------------


def _data_root(data_dir: str | None) -> epath.Path:
  return epath.Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()


def built_versions(name: str, data_dir: str | None = None
                   ) -> list[tfds.core.Version]:
  """The versions of ``name`` built in ``data_dir``, oldest first."""
  folder = _data_root(data_dir) / name
  if not folder.is_dir():
    return []
  versions = [tfds.core.Version(p.name) for p in folder.iterdir()
              if tfds.core.Version.is_valid(p.name)
              and (p / "dataset_info.json").is_file()]
  return sorted(versions)


def _next_version(version: tfds.core.Version) -> str:
  return f"{version.major}.{version.minor + 1}.0"


@dataclasses.dataclass(frozen=True)
class PrepareResult:
  """What :func:`prepare` did.

  Attributes:
    builder: The dataset's builder (ready to read).
    scan: The scan of the folder.
    message: One sentence for the user: built, up to date, or a new version.
  """

  builder: tfds.core.DatasetBuilder
  scan: FolderScan
  message: str


def prepare(name: str, manual_dir: str, data_dir: str | None = None,
            options: FolderOptions = FolderOptions()) -> PrepareResult:
  """Checks a folder and builds it as dataset ``name`` (a new version if the
  files changed since the last build; nothing if they did not).

  Args:
    name: The dataset's name (``--config.dataset.name``).
    manual_dir: The folder (see the module docstring).
    data_dir: The TFDS data dir; ``None`` for TFDS's default.
    options: See :class:`FolderOptions`.

  Returns:
    A :class:`PrepareResult`.

  Raises:
    FolderDatasetError: A bad name, folder or files (all listed).
  """
  check_name(name)
  scan = scan_folder(manual_dir, options)
  versions = built_versions(name, data_dir)
  version, message = FIRST_VERSION, ""
  if versions:
    latest = versions[-1]
    previous = open_builder(f"{name}:{latest}", data_dir)
    previous_metadata = previous.info.metadata or {}
    if previous_metadata.get("fingerprint") == scan.fingerprint:
      return PrepareResult(previous, scan, (
          f"{name} {latest} is up to date with {scan.root} (same files and "
          "options); nothing to do."))
    version = _next_version(latest)
    before = sum((previous_metadata.get("split_sizes") or {}).values())
    now = sum(len(e) for e in scan.splits.values())
    message = (
        f"The files or options differ from what {name} {latest} was built "
        f"from ({before} examples then, {now} now): wrote {name} {version} "
        f"beside it. Readers take the newest; pin the old one with "
        f"--config.dataset.name={name}:{latest}.")
  builder = builder_class(name, version)(data_dir=data_dir, scan=scan)
  builder.download_and_prepare()
  return PrepareResult(builder, scan, message or f"Built {name} {version}.")


def open_builder(name: str, data_dir: str | None = None
                 ) -> tfds.core.DatasetBuilder:
  """Opens a built folder dataset (``NAME`` or ``NAME:VERSION``) from its
  files, without the folder or TensorFlow.

  Raises:
    FileNotFoundError: It is not built in ``data_dir``; the message gives
      the command that builds it.
  """
  base = name.split(":")[0]
  try:
    builder = tfds.core.read_only_builder.builder_from_files(
        name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    versions = built_versions(base, data_dir)
    built = (f" (built versions: {', '.join(map(str, versions))})"
             if versions else "")
    # The likelier fix first: a dataset built with prepare_data --data_dir
    # DIR is opened with --config.dataset.data_dir=DIR.
    raise FileNotFoundError(
        f"dataset {name} is not in {_data_root(data_dir)}{built}. If you "
        "built it with prepare_data --data_dir DIR, pass "
        "--config.dataset.data_dir=DIR; else build it from your folder with "
        "`python -m fcn_jax.prepare_data --dataset folder --manual_dir <dir "
        f"with images/ and masks/> --name {base}"
        + (f" --data_dir {data_dir}" if data_dir else "") + "`.") from None
  features = builder.info.features
  if features is None or not {common.IMAGE, common.MASK} <= set(features):
    raise errors.UserError(
        f"{name} in {_data_root(data_dir)} is not a segmentation dataset "
        f"(no {common.IMAGE}/{common.MASK} features).")
  return builder
