"""The user's downloaded archives, or their extracted folders, as file trees.

The builders that read manually downloaded data (``voc_seg``, ``nyud``,
``sift_flow``, ``pascal_context``) read every file through a
:class:`FileTree`, so each accepts the archive as downloaded or its
extracted folder alike:

* :class:`FolderTree`: an extracted folder;
* :class:`TarTree`: an uncompressed tar, read at random (the VOC releases);
* :class:`ZipTree`: a zip, read at random (``SiftFlowDataset.zip``);
* a compressed tar (``.tgz``, ``.tar.gz``) cannot be read at random, so
  :func:`extract_members` writes the members a builder needs to a folder
  once, and a :class:`FolderTree` reads them there;
* :class:`SubTree`: a tree seen from one of its folders, e.g. an archive's
  top folder.

:func:`open_source` finds a dataset in ``manual_dir`` by a folder it must
contain (``data/images`` for NYUDv2, say), in an extracted folder or in one
of the archive names it is released under, at most two folders deep, because
archives differ in whether they have a top folder.
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
from typing import Iterable, Protocol, Sequence
import zipfile

from absl import logging
from etils import epath

# How many folders above the marker folder a dataset's root may be.
SEARCH_DEPTH = 2
# Folders that archivers add and that never hold a dataset.
_JUNK_FOLDERS = ("__MACOSX",)


class MissingDataError(FileNotFoundError):
  """The archives (or a file they should contain) are not where expected."""


class FileTree(Protocol):
  """Read-only access to the files under one root folder."""

  def exists(self, relpath: str) -> bool:
    """Whether the file ``relpath`` is there."""
    ...

  def read_bytes(self, relpath: str) -> bytes:
    """The file's bytes; :class:`MissingDataError` if it is not there."""
    ...

  def describe(self, relpath: str) -> str:
    """Where ``relpath`` is (or should be), for error messages."""
    ...

  def find_folders(self, folder: str) -> list[str]:
    """Prefixes ``p`` (``''`` or ending in ``/``) where ``p + folder`` is a
    folder, at most :data:`SEARCH_DEPTH` folders deep, shortest first."""
    ...


def _prefixes_of(names: Iterable[str], folder: str) -> list[str]:
  """The prefixes under which ``folder`` holds one of ``names`` (paths)."""
  folder_parts = folder.strip("/").split("/")
  found = set()
  for name in names:
    parts = name.split("/")
    for depth in range(SEARCH_DEPTH + 1):
      end = depth + len(folder_parts)
      if len(parts) > end and parts[depth:end] == folder_parts:
        if not any(part in _JUNK_FOLDERS for part in parts[:depth]):
          found.add("".join(part + "/" for part in parts[:depth]))
  return sorted(found, key=lambda p: (p.count("/"), p))


@dataclasses.dataclass(frozen=True)
class FolderTree:
  """Files in an extracted folder.

  Attributes:
    root: The folder.
    archive: The archive it was extracted from, if this builder extracted
      it; messages then name the archive's member, not the extracted copy.
  """

  root: epath.Path
  archive: epath.Path | None = None

  def exists(self, relpath: str) -> bool:
    return (self.root / relpath).is_file()

  def read_bytes(self, relpath: str) -> bytes:
    path = self.root / relpath
    if not path.is_file():
      raise MissingDataError(f"Missing file {path}.")
    return path.read_bytes()

  def describe(self, relpath: str) -> str:
    if self.archive is not None:
      return f"{self.archive}:{relpath}"
    return str(self.root / relpath)

  def find_folders(self, folder: str) -> list[str]:
    found, level = [], [""]
    for depth in range(SEARCH_DEPTH + 1):
      found += [p for p in level if (self.root / p / folder).is_dir()]
      if depth == SEARCH_DEPTH:
        break
      level = [f"{p}{child.name}/" for p in level
               if (self.root / p).is_dir()
               for child in sorted((self.root / p).iterdir())
               if child.is_dir() and child.name not in _JUNK_FOLDERS]
    return found


class TarTree:
  """Random access to the files of an uncompressed tar."""

  def __init__(self, archive: epath.Path, url: str):
    """Reads the tar's index.

    Args:
      archive: The ``.tar`` file.
      url: Where to download it again, named when it cannot be read.

    Raises:
      MissingDataError: Not a readable uncompressed tar.
    """
    self._archive = archive
    try:
      self._tar = tarfile.open(str(archive), "r:")
      self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, OSError) as e:
      raise MissingDataError(
          f"{archive} is not a readable uncompressed tar ({e}); it may be "
          f"truncated: download it again from {url}.") from e

  def exists(self, relpath: str) -> bool:
    return relpath in self._members

  def read_bytes(self, relpath: str) -> bytes:
    member = self._members.get(relpath)
    if member is None:
      raise MissingDataError(f"{self.describe(relpath)} is not in the archive.")
    with self._tar.extractfile(member) as f:
      return f.read()

  def describe(self, relpath: str) -> str:
    return f"{self._archive}:{relpath}"

  def find_folders(self, folder: str) -> list[str]:
    return _prefixes_of(self._members, folder)


class ZipTree:
  """Random access to the files of a zip."""

  def __init__(self, archive: epath.Path, url: str):
    """Reads the zip's index.

    Args:
      archive: The ``.zip`` file.
      url: Where to download it again, named when it cannot be read.

    Raises:
      MissingDataError: Not a readable zip.
    """
    self._archive = archive
    self._url = url
    try:
      self._zip = zipfile.ZipFile(str(archive))
      self._names = {i.filename for i in self._zip.infolist()
                     if not i.is_dir()}
    except (zipfile.BadZipFile, OSError) as e:
      raise MissingDataError(
          f"{archive} is not a readable zip ({e}); it may be truncated: "
          f"download it again from {url}.") from e

  def exists(self, relpath: str) -> bool:
    return relpath in self._names

  def read_bytes(self, relpath: str) -> bytes:
    if relpath not in self._names:
      raise MissingDataError(f"{self.describe(relpath)} is not in the archive.")
    try:
      return self._zip.read(relpath)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise MissingDataError(
          f"{self.describe(relpath)} cannot be read from the zip ({e}); the "
          f"archive is corrupt: download it again from {self._url}.") from e

  def describe(self, relpath: str) -> str:
    return f"{self._archive}:{relpath}"

  def find_folders(self, folder: str) -> list[str]:
    return _prefixes_of(self._names, folder)


@dataclasses.dataclass(frozen=True)
class SubTree:
  """The files of ``tree`` under ``prefix`` (``''`` or ending in ``/``)."""

  tree: FileTree
  prefix: str

  def exists(self, relpath: str) -> bool:
    return self.tree.exists(self.prefix + relpath)

  def read_bytes(self, relpath: str) -> bytes:
    return self.tree.read_bytes(self.prefix + relpath)

  def describe(self, relpath: str) -> str:
    return self.tree.describe(self.prefix + relpath)

  def find_folders(self, folder: str) -> list[str]:
    return [p[len(self.prefix):] for p in self.tree.find_folders(folder)
            if p.startswith(self.prefix)]


def magic(path: epath.Path) -> str:
  """``'gzip'``, ``'zip'`` or ``'other'``, from the file's first bytes."""
  with path.open("rb") as f:
    head = f.read(4)
  if head[:2] == b"\x1f\x8b":
    return "gzip"
  if head == b"PK\x03\x04":
    return "zip"
  return "other"


def _safe_member_name(name: str) -> bool:
  return not name.startswith("/") and ".." not in name.split("/")


def extract_members(archive: epath.Path, extract_dir: epath.Path,
                    member_pattern: re.Pattern[str], url: str) -> epath.Path:
  """Extracts the files matching ``member_pattern`` from a tar (one pass).

  A compressed tar cannot be read at random, so this writes what a builder
  needs to ``extract_dir`` while streaming through it once. A finished
  extraction of an archive of the same size is reused.

  Args:
    archive: A tar, compressed or not (``tarfile`` detects which).
    extract_dir: Where to write the files, under their archive paths.
    member_pattern: Which member names to extract (``re.search``).
    url: Where to download the archive again, named when it is corrupt.

  Returns:
    ``extract_dir``.

  Raises:
    MissingDataError: The archive cannot be read to the end.
  """
  archive, extract_dir = epath.Path(archive), epath.Path(extract_dir)
  done_marker = extract_dir / ".complete"
  size = archive.stat().length
  if done_marker.exists() and done_marker.read_text().split()[:1] == [
      str(size)]:
    logging.info("Reusing the extraction of %s in %s.", archive, extract_dir)
    return extract_dir
  logging.info("Extracting the needed files from %s to %s ...", archive,
               extract_dir)
  extract_dir.mkdir(parents=True, exist_ok=True)
  count = 0
  try:
    with archive.open("rb") as raw, tarfile.open(fileobj=raw,
                                                 mode="r|*") as tar:
      for member in tar:
        if not (member.isfile() and _safe_member_name(member.name)
                and member_pattern.search(member.name)):
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
        f"{url}.") from e
  logging.info("Extracted %d files from %s.", count, archive)
  done_marker.write_text(f"{size} {count}\n")
  return extract_dir


def open_archive(archive: epath.Path, url: str, extract_dir: epath.Path,
                 member_pattern: re.Pattern[str]) -> FileTree:
  """Opens a zip or a tar (compressed tars are extracted once).

  Args:
    archive: The downloaded file.
    url: Where to download it again, named when it cannot be read.
    extract_dir: Where a compressed tar's members are extracted.
    member_pattern: Which members of a compressed tar to extract.

  Returns:
    A tree rooted at the archive's root.

  Raises:
    MissingDataError: The file is not a readable archive.
  """
  kind = magic(archive)
  if kind == "zip":
    return ZipTree(archive, url)
  if kind == "gzip":
    return FolderTree(extract_members(archive, extract_dir, member_pattern,
                                      url), archive)
  return TarTree(archive, url)


@dataclasses.dataclass(frozen=True)
class Source:
  """How one dataset (or one part of it) is released.

  Attributes:
    name: What it is, for messages (e.g. ``"NYUDv2 (nyud.tar.gz)"``).
    archives: The file names it is downloaded as, in ``manual_dir``.
    url: Where to download it.
    marker: A folder the dataset's root holds (e.g. ``data/images``); finds
      the root in an extracted folder or an archive.
    member_pattern: The members to extract from a compressed tar.
  """

  name: str
  archives: Sequence[str]
  url: str
  marker: str
  member_pattern: re.Pattern[str]


def open_source(manual_dir: epath.Path, source: Source,
                extract_dir: epath.Path, instructions: str) -> FileTree:
  """Finds ``source`` in ``manual_dir``, extracted or as downloaded.

  An extracted folder wins over an archive. The returned tree is rooted at
  the folder that holds ``source.marker``.

  Args:
    manual_dir: The user's folder of downloads.
    source: What to look for.
    extract_dir: Where a compressed archive is extracted (once).
    instructions: The download instructions, appended to errors.

  Returns:
    The dataset's files.

  Raises:
    MissingDataError: Neither the folder nor an archive is there, or the
      archive does not hold the marker folder.
  """
  folder = FolderTree(manual_dir)
  prefixes = folder.find_folders(source.marker)
  if prefixes:
    return FolderTree(manual_dir / prefixes[0])
  for name in source.archives:
    archive = manual_dir / name
    if archive.is_file():
      tree = open_archive(archive, source.url, extract_dir,
                          source.member_pattern)
      prefixes = tree.find_folders(source.marker)
      if not prefixes:
        raise MissingDataError(
            f"{archive} has no {source.marker}/ folder, so it is not the "
            f"{source.name} archive or it is incomplete: download it again "
            f"from {source.url}.\n{instructions}")
      return SubTree(tree, prefixes[0])
  raise MissingDataError(
      f"{source.name} not found in manual_dir {manual_dir}: no "
      f"{' or '.join(source.archives)} and no extracted folder holding "
      f"{source.marker}/.\nGet it from {source.url}.\n{instructions}")


def require_files(tree: FileTree, relpaths: Iterable[str], image_id: str,
                  split: str) -> None:
  """Raises :class:`MissingDataError` naming the first listed file missing."""
  for relpath in relpaths:
    if not tree.exists(relpath):
      raise MissingDataError(
          f"{image_id} (split {split}) is listed but {tree.describe(relpath)} "
          "is missing; the archive is incomplete.")
