r"""Exports a trained model as a serialized ``jax.export`` artifact (StableHLO).

  python -m fcn_jax.export --checkpoint runs/voc_fcn8s \
      --output model.jaxexport [--batch N|dynamic] \
      [--height H --width W | --height dynamic --width dynamic] \
      [--platforms cpu,cuda,tpu]

writes ``model.jaxexport``, one function from uint8 RGB images
``[N, H, W, 3]`` to float32 logits ``[N, H, W, num_classes]`` with the
weights and the input preprocessing inside, and ``model.jaxexport.json``,
which describes its inputs, outputs, classes and preprocessing. By default
the batch, height and width are symbolic (one artifact for every image size;
XLA compiles once per concrete shape when it is called), and the artifact is
lowered for CPU, CUDA and TPU.

Running it needs JAX only, not fcn_jax's model code (nor Flax)::

  from fcn_jax.inference import exported   # or: from fcn_jax import export
  model = exported.load("model.jaxexport")  # export.load is the same
  logits = model(images)           # uint8 [N, H, W, 3] or [H, W, 3]
  labels = model.predict(images)   # argmax: int32 [N, H, W]

or, with JAX alone, ``jax.export.deserialize(open(path, "rb").read())
.call(images)``. This module imports the model code only to export; the
loader is :mod:`fcn_jax.inference.exported`.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import tempfile
from typing import Any, Sequence

import jax
import jax.export  # pylint: disable=unused-import  # jax.export.* below.
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors
from fcn_jax.inference import exported as exported_lib

FORMAT = exported_lib.FORMAT
FORMAT_VERSION = exported_lib.FORMAT_VERSION
DYNAMIC = "dynamic"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
VERIFY_SIZE = 64
# The loader (JAX only), also reachable here.
description_path = exported_lib.description_path
ExportedModel = exported_lib.ExportedModel
load = exported_lib.load


# --------------------------------------------------------------------------
# Exporting (imports the model code).
# --------------------------------------------------------------------------


def preprocess(images: jax.Array, preprocessing: Any) -> jax.Array:
  """:class:`fcn_jax.data.preprocessing.Preprocessing` in ``jnp`` (traceable).

  The same operations in the same order as ``Preprocessing.__call__``.
  """
  x = images.astype(jnp.float32)
  if preprocessing.channel_order == "BGR":
    x = x[..., ::-1]
  x = x * jnp.float32(preprocessing.scale)
  x = x - jnp.asarray(preprocessing.mean, jnp.float32)
  return x / jnp.asarray(preprocessing.std, jnp.float32)


def _load(checkpoint: str, step: str | int):
  """The one place that opens a checkpoint for export."""
  from fcn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.load(checkpoint, step)


def _dimension(value: str | int | None, name: str) -> int | None:
  """``None`` for dynamic, else a positive int."""
  if value is None or value == DYNAMIC:
    return None
  try:
    number = int(value)
  except (TypeError, ValueError):
    number = 0
  if number < 1:
    raise errors.UserError(f"--{name} must be a positive integer or "
                           f"'{DYNAMIC}', got {value!r}")
  return number


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """An exported model: the artifact's bytes and its description."""

  serialized: bytes
  description: dict[str, Any]


def export_checkpoint(checkpoint: str, *, step: str | int = "best",
                      batch: int | None = None,
                      height: int | None = None, width: int | None = None,
                      platforms: Sequence[str] = DEFAULT_PLATFORMS
                      ) -> ExportResult:
  """Exports a saved model with its weights and preprocessing inside.

  Args:
    checkpoint: A training workdir, checkpoint step or weights export.
    step: Which checkpoint of a workdir: ``best`` (default), ``latest`` or a
      number (:func:`fcn_jax.checkpointing.load`).
    batch: Fixed batch size, or ``None`` for a symbolic one.
    height: Fixed image height, or ``None`` for a symbolic one.
    width: Fixed image width, or ``None`` for a symbolic one.
    platforms: Lower for these (``cpu``, ``cuda``, ``rocm``, ``tpu``).

  Returns:
    The serialized ``jax.export.Exported`` and its JSON description.

  Raises:
    ValueError: A net with several inputs (NYUD colour-HHA) or outputs (SIFT
      Flow): the artifact's interface is one RGB image batch to one logits
      array.
  """
  loaded = _load(checkpoint, step)
  if loaded.spec.multi_input or loaded.spec.multi_head:
    raise errors.UserError(
        f"{checkpoint}: {loaded.spec.name} takes or gives several arrays "
        f"(inputs {sorted(loaded.spec.input_channels)}, outputs "
        f"{sorted(loaded.spec.head_classes)}); fcn_jax.export writes nets "
        f"with one RGB input and one output only: use fcn_jax.predict for it.")
  model, preprocessing, metadata = (loaded.model, loaded.preprocessing,
                                    loaded.metadata)
  variables = jax.tree.map(jnp.asarray, loaded.variables)

  def logits(images: jax.Array) -> jax.Array:
    return model.apply(variables, preprocess(images, preprocessing))

  names = [n if fixed is None else str(fixed)
           for n, fixed in (("b", batch), ("h", height), ("w", width))]
  shape = jax.export.symbolic_shape(f"{', '.join(names)}, 3")
  exported = jax.export.export(jax.jit(logits), platforms=tuple(platforms))(
      jax.ShapeDtypeStruct(shape, jnp.uint8))
  num_classes = int(model.num_classes)
  class_names = loaded.class_names
  dims = [d if isinstance(d, int) else n for d, n in
          zip(shape[:3], ("batch", "height", "width"))]
  description = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "model": metadata.get("model"),
      "num_classes": num_classes,
      "class_names": class_names,
      "inputs": [{
          "name": "images", "dtype": "uint8", "shape": [*dims, 3],
          "layout": "NHWC", "channels": "RGB", "range": [0, 255],
          "note": "decoded RGB pixels; the preprocessing below is applied "
                  "inside the artifact"}],
      "outputs": [{
          "name": "logits", "dtype": "float32",
          "shape": [*dims, num_classes],
          "note": "per-pixel class scores; argmax over the last axis gives "
                  "the class index (class_names)"}],
      "preprocessing": {**preprocessing.to_dict(), "applied_inside": True,
                        "formula": "((rgb[..., order] * scale) - mean) / std"},
      "platforms": list(exported.platforms),
      "calling_convention_version": exported.calling_convention_version,
      "jax_version": jax.__version__,
      "source": metadata.get("source"),
      "step": loaded.step,
  }
  return ExportResult(bytes(exported.serialize()), description)


def check_output(output: str) -> None:
  """Checks, before any work, that ``output`` and its ``.json`` can be
  written, creating nothing (a temporary file in its folder if that exists,
  removed).

  Raises:
    errors.UserError: One line: ``output`` is a folder, lies under a regular
      file, or its folder is not writable.
  """
  from fcn_jax.inference import outputs  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(output)
  folder = os.path.dirname(path)
  if os.path.isdir(path):
    raise errors.UserError(f"--output {output} is a folder; give a file "
                           "path, e.g. model.jaxexport")
  existing = outputs.nearest_existing(folder)
  if not existing.is_dir():
    raise errors.UserError(f"--output {output} is under a regular file, not "
                           "a folder; give a path in a folder")
  try:
    if str(existing) != folder:
      if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    else:
      with tempfile.TemporaryFile(dir=folder):
        pass
  except OSError as e:
    raise errors.UserError(f"cannot write in the folder of --output "
                           f"{output}: {e.strerror or e}; give a folder you "
                           "can write to") from None


def save(result: ExportResult, output: str) -> None:
  """Writes the artifact and its JSON description (each atomically; a
  failed write leaves no temporary file, and the older files as they were).

  Raises:
    errors.UserError: A write failed (e.g. a full disk), naming the file and
      the fix.
  """
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  for path, data in ((output, result.serialized),
                     (description_path(output),
                      json.dumps(result.description, indent=2).encode())):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
      with open(tmp, "wb") as f:
        f.write(data)
      os.replace(tmp, path)
    except OSError as e:
      fix = ("free space on that disk or give an --output on another one"
             if e.errno in (errno.ENOSPC, errno.EDQUOT) else
             "give an --output you can write to")
      raise errors.UserError(
          f"cannot write {path} ({len(data) / 2**20:.1f} MiB): "
          f"{e.strerror or e}; {fix}") from e
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)


# --------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------


def verify(result: ExportResult, checkpoint: str, batch: int | None,
           height: int | None, width: int | None,
           step: str | int = "best") -> float:
  """Max |logit difference| of the artifact against the model on one
  random image batch (on this machine's backend)."""
  loaded = _load(checkpoint, step)
  model, variables, preprocessing = (loaded.model, loaded.variables,
                                     loaded.preprocessing)
  exported = jax.export.deserialize(bytearray(result.serialized))
  shape = (batch or 1, height or VERIFY_SIZE, width or VERIFY_SIZE + 13, 3)
  images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  expected = model.apply(variables, preprocessing(images))
  return float(np.max(np.abs(np.asarray(exported.call(images))
                             - np.asarray(expected))))


def _define(values: Any) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("checkpoint", None, "Training workdir, checkpoint step "
                      "directory or weights export.", flag_values=values,
                      required=True)
  flags.DEFINE_string("step", "best", "Which checkpoint of a workdir: best "
                      "(by mean IU; the latest if none was evaluated), "
                      "latest, or a step number.", flag_values=values)
  flags.DEFINE_string("output", None, "The artifact to write, e.g. "
                      "model.jaxexport (its description goes to "
                      "<output>.json).", flag_values=values, required=True)
  for name, what in (("batch_size", "batch size"),
                     ("height", "image height"), ("width", "image width")):
    flags.DEFINE_string(name, DYNAMIC, f"Fixed {what}, or '{DYNAMIC}' for "
                        "any.", flag_values=values)
  flags.DEFINE_string("platforms", ",".join(DEFAULT_PLATFORMS),
                      f"Comma-separated platforms to lower for "
                      f"({', '.join(PLATFORMS)}).", flag_values=values)
  flags.DEFINE_boolean("no_verify", False, "Skip running the artifact "
                       "against the model on one random image.",
                       flag_values=values)
  flags.DEFINE_boolean("overwrite", False, "Replace an existing --output "
                       "(and its .json); else an error before any work.",
                       flag_values=values)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  # pylint: disable=g-import-not-at-top  # The loader above needs JAX only.
  from fcn_jax.inference import command_line
  args = command_line.parse(
      argv, _define, prog="python -m fcn_jax.export",
      doc=__doc__.split("\n", 1)[0], aliases={"--batch": "--batch_size"})
  command_line.converted(args, "step", command_line.step_rule)
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  cli.start(args.xla_cpu_flags, multi_process=False)
  return cli.exit_code(_main, args)


def _main(args: argparse.Namespace) -> int:
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  batch = _dimension(args.batch_size, "batch_size")
  height = _dimension(args.height, "height")
  width = _dimension(args.width, "width")
  if (height is None) != (width is None):
    raise errors.UserError("give --height and --width both as numbers or "
                           f"both '{DYNAMIC}'")
  platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
  unknown = set(platforms) - set(PLATFORMS)
  if unknown or not platforms:
    raise errors.UserError(f"--platforms: unknown {sorted(unknown)}; choose "
                           f"from {', '.join(PLATFORMS)}")
  check_output(args.output)  # Before the work, not after it.
  cli.check_overwrite([args.output, description_path(args.output)],
                      args.overwrite)
  result = export_checkpoint(args.checkpoint, step=args.step, batch=batch,
                             height=height, width=width,
                             platforms=platforms)
  save(result, args.output)
  message = ""
  if not args.no_verify:
    difference = verify(result, args.checkpoint, batch, height, width,
                        args.step)
    message = (f"; on {jax.default_backend()} its logits differ from the "
               f"model's by at most {difference:.2g}")
  inputs = result.description["inputs"][0]["shape"]
  source = (result.description.get("source") or {}).get("checkpoint")
  step = result.description.get("step")
  print(f"exported {source or os.path.abspath(args.checkpoint)}"
        + (f" (step {step}, --step {args.step})" if step is not None else
           " (a weights export)"))
  print(f"wrote {args.output} ({len(result.serialized) / 2**20:.1f} MiB, "
        f"input uint8 {inputs}, {result.description['num_classes']} classes, "
        f"platforms {','.join(result.description['platforms'])}) and "
        f"{description_path(args.output)}{message}")
  return 0


if __name__ == "__main__":
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run_main(main, interrupted="the export did not finish; rerun the "
               "command (with --overwrite if --output exists)")
