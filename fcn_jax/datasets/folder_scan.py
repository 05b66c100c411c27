"""A folder of images and masks, scanned and checked: the first half of
building a folder dataset (:mod:`fcn_jax.datasets.folder` writes it).

Every file is read and every problem listed before anything is written:
images without masks and masks without images, an image and mask of
different sizes, mask values that are neither a class index nor 255,
unreadable or unsupported files, names in a split file that are not there.
The result, a :class:`FolderScan`, holds the classes, the splits (the
``splits/`` files, else :func:`hash_split`) and a fingerprint of every file
and option, which decides whether a rebuild writes a new version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
import re
from typing import Any, Sequence

import numpy as np
from PIL import ExifTags, Image

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
# The image modes PIL widens to RGB without losing anything that matters;
# higher bit depths ("I;16", "I", "F") would be clipped.
_IMAGE_MODES = ("RGB", "L", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "1")
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
