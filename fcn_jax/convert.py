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

import hashlib
import os
import sys
from typing import Sequence, TextIO

from absl import flags

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


FLAGS = flags.FlagValues()
flags.DEFINE_string("input", None, "The weights file.", flag_values=FLAGS,
                    required=True)
flags.DEFINE_enum("format", None, sorted(readers.FORMATS),
                  "The file's format (see below).", flag_values=FLAGS,
                  required=True)
flags.DEFINE_enum("model", None, list(models.MODEL_NAMES),
                  "The FCN to build.", flag_values=FLAGS, required=True)
flags.DEFINE_string("output", None, "Weights export directory to create.",
                    flag_values=FLAGS, required=True)
flags.DEFINE_integer(
    "num_classes", None,
    "Classes of the model (of SIFT Flow's sem head; default: the net's own, "
    "21 for VOC, 40 NYUD, 33 SIFT Flow, 60 PASCAL-Context); must match the "
    "file's score layers, if any.", flag_values=FLAGS)
flags.DEFINE_enum(
    "preprocessing", None, sorted(preprocessing_lib.PRESETS),
    "The preprocessing the weights were trained with (default: for a "
    "trained net, the one of its data layer: caffe_vgg for VOC, nyud, "
    "sift_flow, pascal_context; for a base net the format's: caffe_vgg for "
    "caffemodel and pytorch, torchvision for torchvision, keras_vgg for "
    "keras).", flag_values=FLAGS)
flags.DEFINE_boolean(
    "allow_partial", False,
    "Copy only the layers that match by name, like Caffe's copy_from (e.g. "
    "an FCN-32s file into FCN-16s).", flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False,
                     "Replace an existing --output directory.",
                     flag_values=FLAGS)
flags.DEFINE_boolean(
    "ignore_file_name", False,
    "Skip the checks of the file name against --model and --format.",
    flag_values=FLAGS)
flags.DEFINE_integer("width_divisor", 1,
                     "Divide every width (tiny test models only).",
                     flag_values=FLAGS)

_DOC = ("Convert pretrained VGG16/CaffeNet/FCN weights (Caffe, PyTorch, "
        "Keras) into an fcn_jax weights export.\n\n" + __doc__)


def _epilog() -> str:
  formats = "\n".join(f"  {f.name:12s} {f.description}"
                      for f in readers.FORMATS.values())
  return (
      f"formats:\n{formats}\n\n"
      "A VGG16 (or, for fcn_alexnet, CaffeNet) file converted to an FCN gives "
      "zero score layers and bilinear upsamplers (the reference's starting "
      "point); for nyud_fcn32s_color_d, conv1_1 becomes conv1_1_bgrd with a "
      "fourth input channel, the mean of the three. The preprocessing the "
      "weights expect is recorded and then used by training, evaluation and "
      "prediction.")


def main(argv: Sequence[str] | None = None) -> int:
  cli.parse_command(FLAGS, sys.argv[1:] if argv is None else argv,
                    prog="python -m fcn_jax.convert", doc=_DOC,
                    epilog=_epilog())
  # WeightFileError/WeightsError are UserErrors: one line, exit status 2.
  return cli.exit_code(lambda: convert(
      FLAGS.input, FLAGS.format, FLAGS.model, FLAGS.output,
      num_classes=FLAGS.num_classes, preprocessing=FLAGS.preprocessing,
      allow_partial=FLAGS.allow_partial, overwrite=FLAGS.overwrite,
      ignore_file_name=FLAGS.ignore_file_name,
      width_divisor=FLAGS.width_divisor) and None)


if __name__ == "__main__":
  cli.run_main(main, interrupted="nothing was written (--output is "
               "replaced only by a complete conversion)")
