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
import hashlib
import io
import json
import pathlib
import re
from typing import Any, Iterator, Sequence

from etils import epath
import numpy as np
from PIL import ExifTags, Image
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax import voc
from fcn_jax.datasets import common

IMAGES_DIR = "images"
MASKS_DIR = "masks"
CLASSES_FILE = "classes.txt"
SPLITS_DIR = "splits"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MASK_EXTENSIONS = (".png",)
TRAIN_SPLIT = "train"
VAL_SPLIT = "val"
DEFAULT_VAL_FRACTION = 0.1
# The fewest validation images a hash split gives where the data allows (at
# most a quarter of the folder): one image's metrics are noise.
HASH_SPLIT_MIN_VAL = 5
DEFAULT_SPLIT_SEED = 0
FIRST_VERSION = "1.0.0"
LABEL_SOURCE = "folder"
# The image modes PIL widens to RGB without losing anything that matters;
# higher bit depths ("I;16", "I", "F") would be clipped.
_IMAGE_MODES = ("RGB", "L", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "1")
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
_SPLIT_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

LAYOUT = """\
  <manual_dir>/
    images/<name>.jpg|.jpeg|.png   the photos
    masks/<name>.png               class indices: palette or 8-bit greyscale
                                   PNG, 255 = void
    classes.txt                    optional: one class name a line
    splits/<split>.txt             optional: names of each split, one a line
                                   (else train/val by --val_fraction)"""


class FolderDatasetError(errors.UserError):
  """The folder cannot be built as it is; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class FolderOptions:
  """How a folder becomes a dataset (all recorded in the metadata).

  Attributes:
    num_classes: The number of classes when there is no ``classes.txt``;
      ``None``: the largest mask index plus one.
    val_fraction: Without ``splits/``: the probability of a name going to
      ``val``.
    split_seed: Without ``splits/``: seeds the hash that assigns the splits.
    skip_invalid: Leave out (and list) the examples with a problem instead
      of stopping.
  """

  num_classes: int | None = None
  val_fraction: float = DEFAULT_VAL_FRACTION
  split_seed: int = DEFAULT_SPLIT_SEED
  skip_invalid: bool = False


@dataclasses.dataclass(frozen=True)
class Example:
  """One checked image/mask pair."""

  image_id: str
  image_path: pathlib.Path
  mask_path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """What :func:`scan_folder` found: the examples of each split and more.

  Attributes:
    root: The folder.
    class_names: One name per class index.
    class_source: Where the classes came from (``classes.txt``,
      ``--num_classes`` or ``masks``).
    splits: Split name -> its examples, sorted by name.
    split_method: ``"files"`` (``splits/*.txt``) or ``"hash"``.
    skipped: Name -> why it was left out (with ``skip_invalid``).
    warnings: Things that are allowed but probably not meant.
    fingerprint: Digest of every file's content and of the options.
    options: The options used.
    max_size: The largest height and the largest width of the images.
  """

  root: pathlib.Path
  class_names: tuple[str, ...]
  class_source: str
  splits: dict[str, tuple[Example, ...]]
  split_method: str
  skipped: dict[str, str]
  warnings: tuple[str, ...]
  fingerprint: str
  options: FolderOptions
  max_size: tuple[int, int]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def metadata(self) -> dict[str, Any]:
    """The ``info.metadata`` of the dataset built from this scan."""
    return {
        "synthetic": False,
        "num_classes": self.num_classes,
        "class_names": list(self.class_names),
        "ignore_label": voc.IGNORE_LABEL,
        "class_source": self.class_source,
        "source_dir": str(self.root),
        "split_method": self.split_method,
        "val_fraction": self.options.val_fraction,
        "split_seed": self.options.split_seed,
        "split_sizes": {name: len(examples)
                        for name, examples in self.splits.items()},
        "skipped": dict(self.skipped),
        "max_height": self.max_size[0],
        "max_width": self.max_size[1],
        "fingerprint": self.fingerprint,
    }


# --------------------------------------------------------------------------
# Reading and checking the files.
# --------------------------------------------------------------------------


def _list_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The visible regular files in ``folder``, sorted by name."""
  return sorted(p for p in folder.iterdir()
                if p.is_file() and not p.name.startswith("."))


def _split_hash(seed: int, image_id: str) -> float:
  """A uniform number in ``[0, 1)`` fixed by the seed and the name."""
  digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(image_ids: Sequence[str], val_fraction: float,
               seed: int) -> dict[str, list[str]]:
  """Assigns names to ``train`` and ``val`` by a seeded hash of each name.

  A name goes to ``val`` when its hash is below ``val_fraction``, so the
  assignment of a name never depends on the other names. With two or more
  names and ``0 < val_fraction < 1`` neither split is left empty: the name
  with the smallest (largest) hash moves over. A small folder's ``val`` takes
  at least :data:`HASH_SPLIT_MIN_VAL`, or a quarter of the names if fewer: the
  names of smallest hash, so a name in ``val`` stays there as names are
  added.

  Args:
    image_ids: The names.
    val_fraction: In ``[0, 1)``.
    seed: Seeds the hash.

  Returns:
    ``{"train": [...], "val": [...]}``, each sorted (``val`` is omitted when
    ``val_fraction`` is 0).
  """
  if not 0.0 <= val_fraction < 1.0:
    raise FolderDatasetError(
        f"val_fraction must be in [0, 1), got {val_fraction}.")
  ranked = sorted(image_ids, key=lambda i: (_split_hash(seed, i), i))
  num_val = sum(_split_hash(seed, i) < val_fraction for i in ranked)
  if val_fraction > 0 and len(ranked) >= 2:
    floor = max(1, min(HASH_SPLIT_MIN_VAL, len(ranked) // 4))
    num_val = min(max(num_val, floor), len(ranked) - 1)
  splits = {TRAIN_SPLIT: sorted(ranked[num_val:])}
  if val_fraction > 0:
    splits[VAL_SPLIT] = sorted(ranked[:num_val])
  return splits


def _exif_orientation(image: Image.Image) -> int:
  try:
    return int(image.getexif().get(ExifTags.Base.Orientation, 1))
  except Exception:  # pylint: disable=broad-except
    return 1


@dataclasses.dataclass
class _Pair:
  """What the scan learned about one name."""

  image_path: pathlib.Path | None = None
  mask_path: pathlib.Path | None = None
  size: tuple[int, int] | None = None  # (height, width)
  values: np.ndarray | None = None  # Distinct mask values.
  problems: list[str] = dataclasses.field(default_factory=list)


def _check_image(path: pathlib.Path, data: bytes
                 ) -> tuple[tuple[int, int] | None, int, str | None]:
  """``((height, width), exif_orientation, problem)`` of an image file."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes everything: a truncated file fails here.
      if image.format not in ("JPEG", "PNG"):
        return None, 1, (f"{path} is a {image.format} file; save it as JPEG "
                         "or PNG.")
      if image.mode not in _IMAGE_MODES:
        return None, 1, (f"{path} has PIL mode {image.mode!r} (more than 8 "
                         "bits per channel); save it as 8-bit RGB.")
      return (image.height, image.width), _exif_orientation(image), None
  except Exception as e:  # pylint: disable=broad-except  # PIL: many types.
    return None, 1, f"{path} cannot be read as an image ({e})."


def read_mask(data: bytes, where: str) -> np.ndarray:
  """Reads a mask PNG as ``uint8 [H, W]`` class indices.

  A palette (``P``) PNG gives its pixel indices (the palette only colours
  them), a greyscale (``L``) PNG its values, a 1-bit PNG 0 and 1. Colour and
  16-bit PNGs are refused: mapping colours or brightness back to classes is
  guesswork.

  Args:
    data: The file's bytes.
    where: The file, for the error.

  Returns:
    The class indices.

  Raises:
    common.InvalidExampleError: Not a readable 8-bit index PNG.
  """
  try:
    with Image.open(io.BytesIO(data)) as mask:
      mask.load()
      if mask.format != "PNG":
        raise common.InvalidExampleError(
            f"{where} is a {mask.format} file; masks must be PNG (lossless; "
            "JPEG changes the class indices).")
      if mask.mode in ("P", "L"):
        return np.asarray(mask, dtype=np.uint8)
      if mask.mode == "1":
        return np.asarray(mask).astype(np.uint8)
      if mask.mode.startswith(("I", "F")):
        raise common.InvalidExampleError(
            f"{where} is a {mask.mode} PNG (more than 8 bits); save the class "
            "indices as an 8-bit greyscale or palette PNG.")
      raise common.InvalidExampleError(
          f"{where} has PIL mode {mask.mode!r}; a mask must hold one class "
          "index per pixel (a palette or 8-bit greyscale PNG), not colours.")
  except common.InvalidExampleError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # PIL: many types.
    raise common.InvalidExampleError(
        f"{where} cannot be read as a PNG ({e}).") from e


def _read_classes(root: pathlib.Path, options: FolderOptions,
                  mask_max: int) -> tuple[tuple[str, ...], str]:
  """The class names and where they came from."""
  path = root / CLASSES_FILE
  if path.is_file():
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
      lines.pop()
    names = [line.strip() for line in lines]
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
      raise FolderDatasetError(
          f"{path}: line(s) {empty} are empty; give one class name a line "
          "(line 1 is class 0).")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
      raise FolderDatasetError(f"{path} names these classes more than once: "
                               f"{dups}.")
    if (options.num_classes is not None
        and options.num_classes != len(names)):
      raise FolderDatasetError(
          f"--num_classes {options.num_classes} but {path} names "
          f"{len(names)} classes; drop --num_classes or fix the file.")
    source = CLASSES_FILE
  elif options.num_classes is not None:
    names = [f"class_{i}" for i in range(options.num_classes)]
    source = "--num_classes"
  else:
    names = [f"class_{i}" for i in range(mask_max + 1)]
    source = "masks"
  if not 2 <= len(names) <= voc.IGNORE_LABEL:
    raise FolderDatasetError(
        f"{len(names)} classes (from {source}); a dataset needs 2 to "
        f"{voc.IGNORE_LABEL} classes (index {voc.IGNORE_LABEL} is "
        "void).")
  return tuple(names), source


def _read_split_files(root: pathlib.Path) -> dict[str, tuple[list[str], str]]:
  """``{split: (names, file)}`` from ``splits/*.txt``; empty without it."""
  folder = root / SPLITS_DIR
  if not folder.is_dir():
    return {}
  lists = {}
  for path in _list_files(folder):
    if path.suffix != ".txt":
      continue
    if not _SPLIT_PATTERN.fullmatch(path.stem):
      raise FolderDatasetError(
          f"{path}: a split name must be letters, digits and '_', starting "
          "with a letter; rename the file.")
    names = []
    for line in path.read_text().splitlines():
      name = line.strip()
      if not name or name.startswith("#"):
        continue
      stem, ext = name.rsplit(".", 1) if "." in name else (name, "")
      names.append(stem if "." + ext.lower() in IMAGE_EXTENSIONS else name)
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
      raise FolderDatasetError(f"{path} lists these names more than once: "
                               f"{dups[:10]}.")
    lists[path.stem] = (names, str(path))
  if not lists:
    raise FolderDatasetError(f"{folder} has no <split>.txt files; add them or "
                             "remove the folder to split by --val_fraction.")
  return lists


def scan_folder(root: str | pathlib.Path,
                options: FolderOptions = FolderOptions()) -> FolderScan:
  """Reads and checks every file of a dataset folder (see the module doc).

  Every image is decoded completely and every mask read, so all problems are
  found before anything is written.

  Args:
    root: The folder with ``images/`` and ``masks/``.
    options: Classes, split and skipping options.

  Returns:
    The :class:`FolderScan`.

  Raises:
    FolderDatasetError: A missing ``images/`` or ``masks/``, a bad
      ``classes.txt`` or split file, or (without ``skip_invalid``) any
      example with a problem; the message lists all of them.
  """
  root = pathlib.Path(root).expanduser().absolute()
  for sub in (IMAGES_DIR, MASKS_DIR):
    if not (root / sub).is_dir():
      raise FolderDatasetError(
          f"{root / sub}/ is missing; a folder dataset looks like this:\n"
          + LAYOUT)
  pairs: dict[str, _Pair] = {}
  stray: list[str] = []
  digests: list[tuple[str, str]] = []
  for sub, extensions, kind in ((IMAGES_DIR, IMAGE_EXTENSIONS, "image"),
                                (MASKS_DIR, MASK_EXTENSIONS, "mask")):
    for path in _list_files(root / sub):
      if path.suffix.lower() not in extensions:
        hint = (" (masks must be PNG: JPEG changes the class indices)"
                if kind == "mask" else "")
        stray.append(f"{path}: not a {'/'.join(extensions)} file{hint}; "
                     "convert it or move it out of the folder.")
        continue
      pair = pairs.setdefault(path.stem, _Pair())
      field = "image_path" if kind == "image" else "mask_path"
      if getattr(pair, field) is not None:
        pair.problems.append(
            f"two {kind}s named {path.stem}: {getattr(pair, field).name} and "
            f"{path.name}; keep one.")
        continue
      setattr(pair, field, path)
  if not pairs and not stray:
    raise FolderDatasetError(f"{root / IMAGES_DIR}/ has no images.")

  mask_max = 0
  for image_id, pair in sorted(pairs.items()):
    if pair.image_path is None:
      pair.problems.append(f"{pair.mask_path} has no image "
                           f"{root / IMAGES_DIR}/{image_id}.jpg/.png.")
    if pair.mask_path is None:
      pair.problems.append(f"{pair.image_path} has no mask "
                           f"{root / MASKS_DIR}/{image_id}.png.")
    if pair.problems:
      continue
    image_data = pair.image_path.read_bytes()
    mask_data = pair.mask_path.read_bytes()
    size, orientation, problem = _check_image(pair.image_path, image_data)
    pair.size = size
    if problem:
      pair.problems.append(problem)
    try:
      mask = read_mask(mask_data, str(pair.mask_path))
    except common.InvalidExampleError as e:
      pair.problems.append(str(e))
      continue
    if size is not None and mask.shape != size:
      hint = ""
      if orientation != 1 and mask.shape == size[::-1]:
        hint = (f" The image has EXIF orientation {orientation}: the mask was "
                "probably drawn on the rotated view; save the image rotated "
                "(PIL.ImageOps.exif_transpose).")
      pair.problems.append(
          f"{pair.image_path} is {size[0]}x{size[1]} but {pair.mask_path} is "
          f"{mask.shape[0]}x{mask.shape[1]}.{hint}")
    pair.values = np.unique(mask)
    real = pair.values[pair.values != voc.IGNORE_LABEL]
    if real.size:
      mask_max = max(mask_max, int(real.max()))
    for path, data in ((pair.image_path, image_data),
                       (pair.mask_path, mask_data)):
      digests.append((str(path.relative_to(root)),
                      hashlib.sha256(data).hexdigest()))

  class_names, class_source = _read_classes(root, options, mask_max)
  num_classes = len(class_names)
  for image_id, pair in pairs.items():
    if pair.values is None:
      continue
    bad = [int(v) for v in pair.values
           if v >= num_classes and v != voc.IGNORE_LABEL]
    if bad:
      pair.problems.append(
          f"{pair.mask_path} has values {bad[:10]} outside the classes "
          f"0..{num_classes - 1} ({class_source}) and {voc.IGNORE_LABEL} "
          "(void).")

  split_lists = _read_split_files(root)
  for split, (names, where) in split_lists.items():
    for name in names:
      if name not in pairs:
        pairs[name] = _Pair(problems=[f"{name} is listed in {where} but there "
                                      f"is no {root / IMAGES_DIR}/{name}.*."])

  problems = stray + [f"{image_id}: {p}" for image_id, pair in
                      sorted(pairs.items()) for p in pair.problems]
  skipped = {image_id: " ".join(pair.problems)
             for image_id, pair in sorted(pairs.items()) if pair.problems}
  if problems and not options.skip_invalid:
    raise FolderDatasetError(
        f"{len(problems)} problem(s) in {root}:\n"
        + "\n".join(f"  - {p}" for p in problems)
        + f"\nFix them, or pass --skip_invalid to leave these {len(skipped)} "
        "example(s) out.")
  valid = {i: p for i, p in pairs.items() if not p.problems}

  warnings = [f"ignored {p}" for p in stray]
  if split_lists:
    split_method = "files"
    split_ids = {split: sorted(n for n in names if n in valid)
                 for split, (names, _) in split_lists.items()}
    unlisted = sorted(set(valid) - {n for ns in split_ids.values()
                                    for n in ns})
    if unlisted:
      warnings.append(
          f"{len(unlisted)} example(s) are in no {SPLITS_DIR}/*.txt file and "
          f"will not be used: {', '.join(unlisted[:10])}"
          + (" ..." if len(unlisted) > 10 else ""))
  else:
    split_method = "hash"
    split_ids = hash_split(sorted(valid), options.val_fraction,
                           options.split_seed)
  empty = [s for s, ids in split_ids.items() if not ids]
  if empty:
    raise FolderDatasetError(
        f"split(s) {empty} of {root} would have no examples"
        + (f" (skipped: {len(skipped)})" if skipped else "") + "; add "
        "images" + ("" if split_lists else " (at least 2 are needed for "
                    "train and val)") + ".")
  used_values = [p.values for p in valid.values()]
  if (len(used_values) > 1
      and all(set(v.tolist()) <= {0, voc.IGNORE_LABEL}
              for v in used_values)
      and any(voc.IGNORE_LABEL in v for v in used_values)):
    warnings.append(
        f"every mask holds only 0 and {voc.IGNORE_LABEL}; "
        f"{voc.IGNORE_LABEL} means void (not trained, not scored). If "
        f"{voc.IGNORE_LABEL} is your foreground, save it as 1.")

  for path in (root / CLASSES_FILE, *sorted(
      (root / SPLITS_DIR).glob("*.txt"))):
    if path.is_file():
      digests.append((str(path.relative_to(root)),
                      hashlib.sha256(path.read_bytes()).hexdigest()))
  fingerprint = hashlib.sha256(json.dumps({
      "files": sorted(digests), "class_names": class_names,
      "options": dataclasses.asdict(options)}).encode()).hexdigest()
  splits = {split: tuple(Example(i, valid[i].image_path, valid[i].mask_path)
                         for i in ids) for split, ids in split_ids.items()}
  used = [valid[i].size for ids in split_ids.values() for i in ids]
  max_size = (max(h for h, _ in used), max(w for _, w in used))
  return FolderScan(root, class_names, class_source, splits, split_method,
                    skipped, tuple(warnings), fingerprint, options, max_size)


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
    return tfds.core.DatasetInfo(
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
