r"""Prepares a dataset for training: writes its TFDS ``array_record`` files.

PASCAL VOC 2012 + SBD, from the two archives you downloaded::

  python -m fcn_jax.prepare_data --dataset voc_seg \
      --manual_dir ~/data/voc [--data_dir ~/tensorflow_datasets]

NYUDv2 (``nyud``), SIFT Flow (``sift_flow``) and PASCAL-Context
(``pascal_context``) the same way, each from its own ``--manual_dir`` (the
layouts are at the end of ``--help``).

SYNTHETIC shapes (no download; ``synthetic_shapes/tiny`` for a smaller one)::

  python -m fcn_jax.prepare_data --dataset synthetic_shapes

Your own images and masks (see ``fcn_jax.datasets.folder`` for the layout),
under a name of your choosing that training then takes as
``--config.dataset.name``::

  python -m fcn_jax.prepare_data --dataset folder --manual_dir ~/data/cats \
      --name my_cats [--data_dir ~/tensorflow_datasets]

No TensorFlow is needed. Running it again when the data is there does
nothing (a folder dataset whose files changed gets a new version).
"""

from __future__ import annotations

import sys
import types
from typing import Sequence

from absl import flags
from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from fcn_jax import cli
from fcn_jax import datasets
from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax.datasets import archives
from fcn_jax.datasets import folder


FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "dataset", None,
    "voc_seg, nyud, sift_flow, pascal_context, synthetic_shapes or "
    "synthetic_shapes/<config> (configs: small, tiny), or folder (your own "
    "images and masks).", flag_values=FLAGS, required=True)
flags.DEFINE_string(
    "manual_dir", None,
    "voc_seg, nyud, sift_flow, pascal_context: the folder with the "
    "downloaded archives (or their extracted folders); folder: the folder "
    "with images/ and masks/; layouts below.", flag_values=FLAGS)
flags.DEFINE_string(
    "name", None,
    "folder only: the dataset's name (lower-case letters, digits, '_'), "
    "then given to training as --config.dataset.name=NAME.",
    flag_values=FLAGS)
flags.DEFINE_integer(
    "num_classes", None,
    "folder only, without classes.txt: the number of classes (default: the "
    "largest mask value below 255, plus one).", flag_values=FLAGS)
flags.DEFINE_float(
    "val_fraction", folder.DEFAULT_VAL_FRACTION,
    "folder only, without splits/: the share of images in 'val' (by a "
    "seeded hash of each name).", flag_values=FLAGS)
flags.DEFINE_integer(
    "split_seed", folder.DEFAULT_SPLIT_SEED,
    "folder only, without splits/: seeds that hash.", flag_values=FLAGS)
flags.DEFINE_string(
    "data_dir", None,
    "Where TFDS writes the dataset (default: $TFDS_DATA_DIR or "
    "~/tensorflow_datasets). Point config.dataset.data_dir here.",
    flag_values=FLAGS)
flags.DEFINE_boolean(
    "skip_invalid", False,
    "Downloaded datasets and folder: leave out (and list) examples with a "
    "corrupt image or a label outside the class range instead of stopping "
    "(folder: also images without masks and masks without images).",
    flag_values=FLAGS)
flags.DEFINE_boolean(
    "no_check_split_sizes", False,
    "Downloaded datasets: do not check the id lists against the official "
    "split sizes.", flag_values=FLAGS)


def _parse_args(argv: Sequence[str]) -> types.SimpleNamespace:
  epilog = "\n\n".join(
      [f"{name} manual_dir layout:\n{builder.MANUAL_LAYOUT}"
       for name, builder in datasets.MANUAL_BUILDERS.items()]
      + ["folder manual_dir layout:\n" + folder.LAYOUT])
  cli.parse_command(FLAGS, argv, prog="python -m fcn_jax.prepare_data",
                    doc=__doc__, epilog=epilog)
  return types.SimpleNamespace(**FLAGS.flag_values_dict())


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
  if base_name == "folder":
    raise errors.UserError(
        "--dataset folder: use prepare_folder (it needs a name).")
  _check_dataset_name(dataset)
  download_config = None
  if base_name in datasets.MANUAL_BUILDERS:
    instructions = datasets.MANUAL_BUILDERS[
        base_name].MANUAL_DOWNLOAD_INSTRUCTIONS
    if not manual_dir:
      raise errors.UserError(
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
      raise errors.UserError(
          "--manual_dir, --skip_invalid and --no_check_split_sizes apply to "
          f"downloaded datasets only ({', '.join(datasets.MANUAL_BUILDERS)}).")
    builder = tfds.builder(dataset, data_dir=data_dir)
  builder.download_and_prepare(download_config=download_config)
  return builder


def _check_dataset_name(dataset: str) -> None:
  if dataset.split("/")[0] not in (*datasets.BUILDERS, "folder"):
    raise errors.UserError(
        f"--dataset {dataset}: unknown dataset; choose one of "
        f"{', '.join(sorted(datasets.BUILDERS))} or folder (your own images "
        "and masks, with --name NAME).")


def prepare_folder(args: types.SimpleNamespace) -> folder.PrepareResult:
  """Checks the folder-only options and builds the folder dataset.

  Raises:
    ValueError: A missing ``--name``/``--manual_dir``, a bad option value, or
      problems with the files (all listed).
  """
  if not args.name:
    raise errors.UserError("--dataset folder needs --name NAME, the name "
                           "training takes as --config.dataset.name=NAME.")
  if not args.manual_dir:
    raise errors.UserError("--dataset folder needs --manual_dir, the folder "
                           "with images/ and masks/:\n" + folder.LAYOUT)
  if not epath.Path(args.manual_dir).expanduser().is_dir():
    raise FileNotFoundError(f"--manual_dir {args.manual_dir} is not a folder.")
  if args.num_classes is not None and args.num_classes < 2:
    raise errors.UserError(
        f"--num_classes must be >= 2, got {args.num_classes}.")
  if args.no_check_split_sizes:
    raise errors.UserError("--no_check_split_sizes applies to voc_seg only.")
  options = folder.FolderOptions(
      num_classes=args.num_classes, val_fraction=args.val_fraction,
      split_seed=args.split_seed, skip_invalid=args.skip_invalid)
  return folder.prepare(args.name, args.manual_dir, args.data_dir, options)


def _folder_only_options(args: types.SimpleNamespace) -> list[str]:
  return [flag for flag, value, default in (
      ("--name", args.name, None), ("--num_classes", args.num_classes, None),
      ("--val_fraction", args.val_fraction, folder.DEFAULT_VAL_FRACTION),
      ("--split_seed", args.split_seed, folder.DEFAULT_SPLIT_SEED))
          if value != default]


# Fewer validation images than this make a split whose metrics swing with
# every image: prepare_data warns.
MIN_VAL_IMAGES = 10


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.INFO)
  logging_utils.quiet_library_logs()
  # Missing/incomplete archives, wrong split sizes, invalid examples and bad
  # options: one line that says what to do, exit status 2.
  return cli.exit_code(_main, args)


def _build(args: types.SimpleNamespace):
  """``(builder, folder result or None)``; TFDS's own printing (its
  "Downloading and preparing dataset ..." though nothing downloads) goes to
  the debug log."""
  with logging_utils.quiet_stdout():
    if args.dataset == "folder":
      result = prepare_folder(args)
      return result.builder, result
    # An unknown --dataset first: a typo of "folder" is not a misuse of the
    # folder-only options that follow it.
    _check_dataset_name(args.dataset)
    if _folder_only_options(args):
      raise errors.UserError(f"{', '.join(_folder_only_options(args))} "
                             "apply to --dataset folder only.")
    return prepare(args.dataset, manual_dir=args.manual_dir,
                   data_dir=args.data_dir, skip_invalid=args.skip_invalid,
                   check_split_sizes=not args.no_check_split_sizes), None


def _main(args: types.SimpleNamespace) -> int:
  builder, result = _build(args)
  synthetic = builder.info.metadata.get("synthetic", False)
  print(f"{builder.info.full_name} is ready in {builder.data_dir}"
        + (" (SYNTHETIC data, not VOC)" if synthetic else ""))
  for name, split in sorted(builder.info.splits.items()):
    print(f"  {name:16s} {split.num_examples:6d} examples")
  for split, ids in getattr(builder, "skipped_ids", {}).items():
    if ids:
      print(f"  skipped {len(ids)} invalid examples in {split}: "
            f"{', '.join(ids)}")
  if result is not None:
    classes = datasets.dataset_classes(builder.info.metadata)
    print(f"  {classes[0]} classes ({result.scan.class_source}): "
          f"{', '.join(classes[1])}")
    for image_id, reason in result.scan.skipped.items():
      print(f"  skipped {image_id}: {reason}")
    for warning in result.scan.warnings:
      print(f"  warning: {warning}")
    height, width = result.scan.max_size
    print(f"  largest image: {height} high, {width} wide (evaluation pads "
          f"to config.input.eval_pad_size, which must be >= "
          f"{max(height, width)})")
    val = builder.info.splits["val"].num_examples if (
        "val" in builder.info.splits) else 0
    if val < MIN_VAL_IMAGES:
      print(f"  warning: the val split has {val} image(s): its metrics will "
            "swing with every image; raise --val_fraction (or list more "
            "names in splits/val.txt) for a steadier measure")
    print(result.message)
    flags = f"--config.dataset.name={args.name}" + (
        f" --config.dataset.data_dir={args.data_dir}" if args.data_dir
        else "")
    print(f"Train on it with --config configs/folder_fcn8s.py {flags} (GPU, "
          "pretrained VGG16), or try it on a CPU in minutes with --config "
          f"configs/folder_quickstart.py {flags} (small, from scratch).")
  return 0


if __name__ == "__main__":
  cli.run_main(main, interrupted="the dataset was not built; rerunning the "
               "same command builds it")
