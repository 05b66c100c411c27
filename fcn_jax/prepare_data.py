r"""Prepares a dataset for training: writes its TFDS ``array_record`` files.

PASCAL VOC 2012 + SBD, from the two archives you downloaded::

  python -m fcn_jax.prepare_data --dataset voc_seg \
      --manual_dir ~/data/voc [--data_dir ~/tensorflow_datasets]

NYUDv2 (``nyud``), SIFT Flow (``sift_flow``) and PASCAL-Context
(``pascal_context``) the same way, each from its own ``--manual_dir`` (the
layouts are at the end of ``--help``).

SYNTHETIC shapes (no download; ``synthetic_shapes/tiny`` for a smaller one)::

  python -m fcn_jax.prepare_data --dataset synthetic_shapes

No TensorFlow is needed. Running it again when the data is there does
nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from fcn_jax import datasets
from fcn_jax.datasets import archives


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m fcn_jax.prepare_data",
      description=__doc__.split("\n", 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n\n".join(f"{name} manual_dir layout:\n{builder.MANUAL_LAYOUT}"
                        for name, builder in datasets.MANUAL_BUILDERS.items()))
  parser.add_argument(
      "--dataset", required=True,
      help="voc_seg, nyud, sift_flow, pascal_context, synthetic_shapes or "
           "synthetic_shapes/<config> (configs: small, tiny).")
  parser.add_argument(
      "--manual_dir", default=None,
      help="voc_seg, nyud, sift_flow, pascal_context: the folder with the "
           "downloaded archives (or their extracted folders); layouts below.")
  parser.add_argument(
      "--data_dir", default=None,
      help="Where TFDS writes the dataset (default: $TFDS_DATA_DIR or "
           "~/tensorflow_datasets). Point config.dataset.data_dir here.")
  parser.add_argument(
      "--skip_invalid", action="store_true",
      help="Downloaded datasets: leave out (count and log) examples with a "
           "corrupt image or a label outside the class range instead of "
           "stopping.")
  parser.add_argument(
      "--no_check_split_sizes", action="store_true",
      help="Downloaded datasets: do not check the id lists against the "
           "official split sizes.")
  return parser.parse_args(argv)


def prepare(dataset: str, *, manual_dir: str | None = None,
            data_dir: str | None = None, skip_invalid: bool = False,
            check_split_sizes: bool = True) -> tfds.core.DatasetBuilder:
  """Builds ``dataset`` (if not built yet) and returns its builder.

  Args:
    dataset: A name of ``datasets.BUILDERS``, with ``/config`` for
      ``synthetic_shapes``.
    manual_dir: Downloaded datasets: the folder with the archives.
    data_dir: TFDS data dir; ``None`` for the TFDS default.
    skip_invalid: Downloaded datasets: skip invalid examples (counted and
      logged).
    check_split_sizes: Downloaded datasets: check the official split sizes.

  Returns:
    The prepared builder.

  Raises:
    ValueError: Unknown dataset or an option that does not apply to it.
    archives.MissingDataError: Archives missing or incomplete.
  """
  base_name = dataset.split("/")[0]
  if base_name not in datasets.BUILDERS:
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of "
                     f"{sorted(datasets.BUILDERS)}.")
  download_config = None
  if base_name in datasets.MANUAL_BUILDERS:
    instructions = datasets.MANUAL_BUILDERS[
        base_name].MANUAL_DOWNLOAD_INSTRUCTIONS
    if not manual_dir:
      raise ValueError(
          f"{base_name} needs --manual_dir, the folder with the archives.\n"
          + instructions)
    manual_path = epath.Path(manual_dir).expanduser()
    if not manual_path.is_dir():
      raise archives.MissingDataError(
          f"--manual_dir {manual_path} is not a folder.\n" + instructions)
    builder = tfds.builder(dataset, data_dir=data_dir,
                           skip_invalid=skip_invalid,
                           check_split_sizes=check_split_sizes)
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_path))
  else:
    if manual_dir or skip_invalid or not check_split_sizes:
      raise ValueError("--manual_dir, --skip_invalid and "
                       "--no_check_split_sizes apply to downloaded datasets "
                       f"only ({', '.join(datasets.MANUAL_BUILDERS)}).")
    builder = tfds.builder(dataset, data_dir=data_dir)
  builder.download_and_prepare(download_config=download_config)
  return builder


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.INFO)
  try:
    builder = prepare(args.dataset, manual_dir=args.manual_dir,
                      data_dir=args.data_dir, skip_invalid=args.skip_invalid,
                      check_split_sizes=not args.no_check_split_sizes)
  except (ValueError, FileNotFoundError) as e:
    # Missing/incomplete archives, wrong split sizes, invalid examples and
    # bad options: the message says what to do; a traceback would not help.
    print(f"error: {e}", file=sys.stderr)
    return 1
  synthetic = builder.info.metadata.get("synthetic", False)
  print(f"{builder.info.full_name} is ready in {builder.data_dir}"
        + (" (SYNTHETIC data, not VOC)" if synthetic else ""))
  for name, split in sorted(builder.info.splits.items()):
    print(f"  {name:16s} {split.num_examples:6d} examples")
  for split, ids in getattr(builder, "skipped_ids", {}).items():
    if ids:
      print(f"  skipped {len(ids)} invalid examples in {split}: "
            f"{', '.join(ids)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
