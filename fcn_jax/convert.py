"""Converts pretrained weight files into fcn_jax weights exports.

Example (the released FCN-8s)::

  python -m fcn_jax.convert --input fcn8s-heavy-pascal.caffemodel \\
      --format caffemodel --model fcn8s --output weights/fcn8s-heavy

The output directory holds the Orbax-saved params and ``fcn_jax_weights.json``
(model, classes, the preprocessing the weights expect, the source file's
SHA-256 and the load report); training (``--config.init_from``), evaluation
and prediction read it with :func:`fcn_jax.checkpointing.load`. A table of
loaded, missing and unused layers is printed. Any problem is one error, and
nothing is written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Sequence, TextIO

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax import errors
from fcn_jax import models
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax import readers
from fcn_jax.models import weights

# pytorch-fcn's FCN8sAtOnce applies its skip scales in forward(), so its files
# have no Scale layers.
_FORWARD_SCALES = ("scale_pool4", "scale_pool3")


def _check_file_name(path: str, fmt: str, model_name: str,
                     preprocessing: str | None) -> None:
  """Refuses conversions whose file name contradicts the options.

  These are the mistakes that file contents cannot reveal: a torchvision-named
  file holding Caffe weights (pytorch-fcn's ``vgg16_from_caffe.pth``), and
  pytorch-fcn's FCN-8s and FCN-8s at-once, whose state dicts are alike.
  """
  name = os.path.basename(path).lower()
  problems = []
  if fmt == "torchvision" and preprocessing is None and "caffe" in name:
    problems.append(
        f"{path}: the name says Caffe-converted weights, but --format "
        "torchvision assumes torchvision's preprocessing (RGB, /255, ImageNet "
        "mean/std). State it: --preprocessing caffe_vgg (pytorch-fcn's "
        "vgg16_from_caffe.pth) or --preprocessing torchvision.")
  released = {n.released.lower(): n.name for n in models.NETS.values()
              if n.released}
  if released.get(name, model_name) != model_name:
    problems.append(f"{path}: the name is the reference's release of "
                    f"{released[name]}; use --model {released[name]}.")
  elif "atonce" in name and model_name != "fcn8s_atonce":
    problems.append(f"{path}: the name says an at-once model; use --model "
                    "fcn8s_atonce.")
  if fmt == "pytorch" and model_name == "fcn8s_atonce" and "atonce" not in name:
    problems.append(
        f"{path}: pytorch-fcn's FCN-8s and FCN-8s at-once files look alike, "
        "and this name does not say at-once; check that --model fcn8s_atonce "
        "is right.")
  if problems:
    raise weights.WeightsError(
        "\n".join(problems) + "\n(--ignore_file_name skips these checks.)")


def sha256sum(path: str, chunk_size: int = 1 << 22) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(chunk_size), b""):
      digest.update(chunk)
  return digest.hexdigest()


def convert(input_path: str, fmt: str, model_name: str, output: str, *,
            num_classes: int | None = None,
            preprocessing: str | None = None,
            allow_partial: bool = False, overwrite: bool = False,
            ignore_file_name: bool = False, width_divisor: int = 1,
            out: TextIO | None = None) -> tuple[str, weights.LoadReport]:
  """Converts one weights file; see the module docstring and ``--help``.

  Args:
    input_path: The weights file.
    fmt: Its format, a key of :data:`fcn_jax.readers.FORMATS`.
    model_name: The FCN to build.
    output: The checkpoint directory to create.
    num_classes: The model's classes (of its first head); None: the net's
      reference count.
    preprocessing: The preset the weights were trained with (default: for a
      trained net, a file with score layers, the preset of the net's data
      layer, e.g. ``nyud``; for a base net the format's).
    allow_partial: Copy by name like Caffe (``strict=False``).
    overwrite: Replace an existing ``output``.
    ignore_file_name: Skip the file-name checks.
    width_divisor: Model width divisor (tiny test models).
    out: Where to print the report (default stdout).

  Returns:
    ``(checkpoint directory, load report)``.

  Raises:
    readers.WeightFileError: the file cannot be read as ``fmt``.
    weights.WeightsError: the weights do not fit the model.
    checkpointing.CheckpointError: ``output`` exists.
    ValueError: a bad option.
  """
  if fmt not in readers.FORMATS:
    raise errors.UserError(f"unknown --format {fmt!r}; choose one of "
                     f"{sorted(readers.FORMATS)}.")
  spec = models.ModelSpec(model_name, num_classes,
                          width_divisor=width_divisor)  # Validates.
  num_classes = spec.num_classes
  model_options = spec.shape_options()
  if preprocessing is not None:
    preprocessing_lib.get_preprocessing(preprocessing)  # Validates.
  output = os.path.abspath(output)
  if os.path.isdir(output) and os.listdir(output) and not overwrite:
    raise checkpointing.CheckpointError(
        f"{output} exists and is not empty; choose another --output or pass "
        "--overwrite.")
  if not ignore_file_name:
    _check_file_name(input_path, fmt, model_name, preprocessing)

  layers = readers.read_layers(input_path, fmt)
  trained = any(weights.is_head_layer(name) for name in layers)
  chosen = preprocessing_lib.get_preprocessing(
      preprocessing or (spec.net.preprocessing if trained
                        else readers.FORMATS[fmt].preprocessing))
  params, report = weights.from_caffe_layers(
      layers, model_name, num_classes, strict=not allow_partial,
      optional_layers=_FORWARD_SCALES if fmt == "pytorch" else (),
      source=input_path, return_report=True, **model_options)
  source = {"file": os.path.abspath(input_path), "format": fmt,
            "sha256": sha256sum(input_path)}
  metadata = checkpointing.make_metadata(spec, chosen, source=source,
                                         report=report.to_dict())
  directory = checkpointing.save_weights(output, params, metadata,
                                         overwrite=overwrite)
  out = out or sys.stdout
  print(report.table(), file=out)
  print(f"\n{report.summary()}", file=out)
  print(f"preprocessing: {chosen.name} ({chosen.channel_order}, "
        f"scale {chosen.scale:g}, mean {chosen.mean}, std {chosen.std})",
        file=out)
  print(f"wrote {model_name} (num_classes={num_classes}) to {directory}",
        file=out)
  return directory, report


def build_parser() -> argparse.ArgumentParser:
  formats = "\n".join(f"  {f.name:12s} {f.description}"
                      for f in readers.FORMATS.values())
  parser = cli.ArgumentParser(
      prog="python -m fcn_jax.convert",
      description="Convert pretrained VGG16/CaffeNet/FCN weights (Caffe, "
      "PyTorch, Keras) into an fcn_jax weights export.",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f"formats:\n{formats}\n\n"
      "A VGG16 (or, for fcn_alexnet, CaffeNet) file converted to an FCN gives "
      "zero score layers and bilinear upsamplers (the reference's starting "
      "point); for nyud_fcn32s_color_d, conv1_1 becomes conv1_1_bgrd with a "
      "fourth input channel, the mean of the three. The preprocessing the "
      "weights expect is recorded and then used by training, evaluation and "
      "prediction.")
  parser.add_argument("--input", required=True, help="the weights file")
  parser.add_argument("--format", required=True, choices=sorted(readers.FORMATS),
                      help="the file's format (see below)")
  parser.add_argument("--model", required=True, choices=models.MODEL_NAMES,
                      help="the FCN to build")
  parser.add_argument("--output", required=True,
                      help="weights export directory to create")
  parser.add_argument("--num_classes", type=int, default=None,
                      help="classes of the model (of SIFT Flow's sem head; "
                      "default: the net's own, 21 for VOC, 40 NYUD, 33 SIFT "
                      "Flow, 60 PASCAL-Context); must match the file's score "
                      "layers, if any")
  parser.add_argument("--preprocessing", default=None,
                      choices=sorted(preprocessing_lib.PRESETS),
                      help="the preprocessing the weights were trained with "
                      "(default: for a trained net, the one of its data layer: "
                      "caffe_vgg for VOC, nyud, sift_flow, pascal_context; "
                      "for a base net the format's: caffe_vgg for caffemodel "
                      "and pytorch, torchvision for torchvision, keras_vgg "
                      "for keras)")
  parser.add_argument("--allow_partial", action="store_true",
                      help="copy only the layers that match by name, like "
                      "Caffe's copy_from (e.g. an FCN-32s file into FCN-16s)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing --output directory")
  parser.add_argument("--ignore_file_name", action="store_true",
                      help="skip the checks of the file name against --model "
                      "and --format")
  parser.add_argument("--width_divisor", type=int, default=1,
                      help="divide every width (tiny test models only)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  # WeightFileError/WeightsError are ValueErrors: one line, exit status 2.
  return cli.exit_code(lambda: convert(
      args.input, args.format, args.model, args.output,
      num_classes=args.num_classes, preprocessing=args.preprocessing,
      allow_partial=args.allow_partial, overwrite=args.overwrite,
      ignore_file_name=args.ignore_file_name,
      width_divisor=args.width_divisor) and None)


if __name__ == "__main__":
  sys.exit(main())
