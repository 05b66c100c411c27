"""What every builder of manually downloaded data shares.

:class:`ManualBuilder` is the base of ``voc_seg``, ``nyud``, ``sift_flow``
and ``pascal_context``. It gives them the same options and the same
treatment of bad data:

* a missing archive, or a listed file missing from it, stops the build with
  :class:`~fcn_jax.datasets.archives.MissingDataError`, naming the file and
  where to download it;
* an example whose image is corrupt or whose labels are outside the class
  range stops it with :class:`~fcn_jax.datasets.common.InvalidExampleError`
  naming the id and the file, unless ``skip_invalid`` is set: then it is
  left out, logged and listed in ``builder.skipped_ids``;
* each split's id list must have the official number of ids
  (:class:`SplitSizeError`), unless ``check_split_sizes`` is off.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax.datasets import archives
from fcn_jax.datasets import common

# The id and class lists shipped with the package (copies of the reference
# repository's lists, docs/reference.md §1).
SPLITS_DIR = epath.Path(__file__).parent / "splits"


class SplitSizeError(errors.UserError):
  """An id list does not have the recorded number of ids."""


def parse_id_list(text: str, where: str) -> list[str]:
  """Reads one id per line, keeping the order; duplicates are an error."""
  ids = [line.strip() for line in text.splitlines() if line.strip()]
  if len(set(ids)) != len(ids):
    seen, dups = set(), []
    for i in ids:
      if i in seen:
        dups.append(i)
      seen.add(i)
    raise errors.UserError(f"{where} lists these ids more than once: {dups[:10]}")
  return ids


def read_id_list(path: epath.Path) -> list[str]:
  """Reads an id list file (see :func:`parse_id_list`)."""
  if not path.is_file():
    raise archives.MissingDataError(f"Missing id list {path}.")
  return parse_id_list(path.read_text(), str(path))


def check_split_sizes(splits: Mapping[str, Any], list_files: Mapping[str, str],
                      expected: Mapping[str, int]) -> None:
  """Raises :class:`SplitSizeError` unless every split has its recorded size.

  Args:
    splits: Split name -> its ids (anything with a length).
    list_files: Split name -> where its ids came from, for the message.
    expected: Split name -> the official number of ids.
  """
  wrong = [f"  {name}: expected {expected[name]:,} ids, found "
           f"{len(splits[name]):,} (from {list_files[name]})"
           for name in expected if len(splits[name]) != expected[name]]
  if wrong:
    raise SplitSizeError(
        "The id lists do not have the sizes of the official releases:\n"
        + "\n".join(wrong) + "\nThe archives may be incomplete or a different "
        "release. To build from these lists anyway, pass "
        "--no_check_split_sizes to fcn_jax.prepare_data "
        "(check_split_sizes=False).")


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder of data the user downloaded into ``manual_dir``.

  Subclasses set :attr:`SPLIT_SIZES`, :attr:`MANUAL_LAYOUT` and
  ``MANUAL_DOWNLOAD_INSTRUCTIONS`` and build their examples through
  :meth:`_checked_examples`. They write ``array_record`` files by default,
  which ``tfds.data_source`` and grain read without TensorFlow.
  """

  # Split name -> the official number of examples.
  SPLIT_SIZES: ClassVar[dict[str, int]] = {}
  # The manual_dir layout, for ``--help`` and error messages.
  MANUAL_LAYOUT: ClassVar[str] = ""

  def __init__(self, *, skip_invalid: bool = False,
               check_split_sizes: bool = True,
               id_list_dir: str | None = None, **kwargs):
    """Creates the builder.

    Args:
      skip_invalid: Skip (and count, and log by id) examples whose image is
        corrupt or whose labels are invalid, instead of stopping with an
        error. Missing files always stop the build.
      check_split_sizes: Check each split against :attr:`SPLIT_SIZES`.
      id_list_dir: Folder of the id lists :meth:`_read_id_lists` reads
        (builders whose splits are the reference's lists); default: the
        copies shipped in ``fcn_jax/datasets/splits/``.
      **kwargs: Passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``,
        ``file_format``, ...).
    """
    self._skip_invalid = skip_invalid
    self._check_split_sizes = check_split_sizes
    self._id_list_dir = epath.Path(id_list_dir or SPLITS_DIR)
    self.skipped_ids: dict[str, list[str]] = {}
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _read_id_lists(self, prefix: str, splits: Sequence[str]
                     ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The ids of each split from ``<id_list_dir>/<prefix>_<split>.txt``.

    Returns:
      The ids by split, and each split's list file (for messages).
    """
    files = {split: self._id_list_dir / f"{prefix}_{split}.txt"
             for split in splits}
    return ({split: read_id_list(path) for split, path in files.items()},
            {split: str(path) for split, path in files.items()})

  def _manual_dir(self, dl_manager: tfds.download.DownloadManager
                  ) -> epath.Path:
    """``manual_dir``, or :class:`MissingDataError` with the instructions."""
    try:
      return epath.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS: manual_dir missing or empty.
      raise archives.MissingDataError(
          str(e).split("\n", 1)[0] + "\n" + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      ) from e

  def _extract_dir(self, dl_manager: tfds.download.DownloadManager,
                   part: str) -> epath.Path:
    """Where a compressed archive of this dataset is extracted (once)."""
    return (epath.Path(dl_manager.download_dir) / "extracted"
            / f"{self.name}_{part}")

  def _open(self, dl_manager: tfds.download.DownloadManager,
            source: archives.Source, part: str) -> archives.FileTree:
    """Finds ``source`` in manual_dir (see :func:`archives.open_source`)."""
    return archives.open_source(self._manual_dir(dl_manager), source,
                                self._extract_dir(dl_manager, part),
                                self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _check_sizes(self, splits: Mapping[str, Any],
                   list_files: Mapping[str, str]) -> None:
    if self._check_split_sizes:
      check_split_sizes(splits, list_files, self.SPLIT_SIZES)

  def _checked_examples(self, split: str, image_ids: Sequence[str],
                        make_example: Callable[[str], dict[str, Any]]
                        ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(id, make_example(id))``, leaving out invalid examples if
    ``skip_invalid``; otherwise an invalid one stops the build.

    Args:
      split: The split's name, for messages and :attr:`skipped_ids`.
      image_ids: The split's ids, in order.
      make_example: Reads, checks and converts one example; raises
        :class:`common.InvalidExampleError` for bad data and
        :class:`archives.MissingDataError` for missing files.

    Raises:
      common.InvalidExampleError: An invalid example without
        ``skip_invalid``, or every example of the split invalid.
    """
    skipped = self.skipped_ids.setdefault(split, [])
    for image_id in image_ids:
      try:
        example = make_example(image_id)
      except common.InvalidExampleError as e:
        if not self._skip_invalid:
          raise common.InvalidExampleError(
              f"{e} (split {split}). Fix or replace the file, or build with "
              "--skip_invalid to leave such examples out.") from e
        logging.warning("Skipping %s in %s: %s", image_id, split, e)
        skipped.append(image_id)
        continue
      yield image_id, example
    if skipped:
      logging.warning("Skipped %d invalid examples in %s: %s", len(skipped),
                      split, ", ".join(skipped))
      if len(skipped) == len(image_ids):
        # TFDS cannot write an empty split; say why it would be empty.
        raise common.InvalidExampleError(
            f"Every example of split {split} is invalid ({len(skipped)} "
            f"skipped: {', '.join(skipped[:10])}); see the warnings above.")
