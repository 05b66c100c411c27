r"""Segments images with a trained FCN: class-index PNGs and overlays.

  python -m fcn_jax.predict --checkpoint DIR --input PATH_OR_GLOB --output DIR

For every input image ``NAME.ext`` this writes, under ``--output``:

* ``NAME.png``: the predicted classes as a palette PNG with the VOC colour map
  (viewers show colours; ``np.asarray(PIL.Image.open(...))`` and the VOC devkit
  read class indices);
* ``NAME_overlay.jpg``: the image blended with the colour mask, with a legend
  of the classes present;
* ``NAME.npz`` with ``--save_logits``: ``logits``, float16 ``[H, W, C]``.

A two-headed net (SIFT Flow) writes one of each per head, ``NAME_sem.png``,
``NAME_sem_overlay.jpg``, ``NAME_geo.png`` ... (and ``logits_sem``,
``logits_geo`` in ``NAME.npz``).

Nets that read more than the colour image take the other images from
matching files, named as the ``--input`` image (same stem, any image suffix)
in a folder, or by a pattern with ``{name}`` for the stem:

* NYUD color-HHA: ``--hha FOLDER`` (or ``--hha 'hha/{name}.png'``), the HHA
  PNGs;
* NYUD color-D: ``--depth FOLDER``, the raw depth PNGs (16-bit; the net takes
  ``log(depth) - 7.844``, so every pixel needs a positive depth);
* NYUD HHA alone: ``--input`` gives the HHA images themselves.

An example whose matching file is missing or unreadable fails alone, like an
unreadable image.

``--input`` takes files, folders (their images, not recursive) and glob
patterns, and may be repeated. Images are grouped by run shape (see
``--mode`` and ``--buckets``) and batched; in exact mode at most
``--max_buckets`` (4) buckets are chosen from the input sizes (as training
chooses them from a split's), so a folder of mixed sizes compiles at most 4
times, not once per size. For images larger than memory allows, ``--mode slide
--window 512 --stride 384`` tiles each image with overlapping windows, runs
them ``--batch_size`` at a time (one compile) and averages their logits
where they overlap (docs/inference.md). 16-bit images are scaled to 8 bits
as viewers show them. An unreadable file, an image whose forward pass would
need more memory than there is (``--max_memory``; checked before anything is
allocated for it; the report suggests ``--mode slide``, it does not switch
by itself) and outputs that cannot be written are reported and skipped; a
summary ends the run, and the exit status is 1 if any input failed. An output
folder that cannot be written, a checkpoint that cannot be read, and outputs
that exist already (without ``--overwrite``), are errors (exit status 2)
before any work; the output folder is created only once the checkpoint has
loaded.

The work is the library :mod:`fcn_jax.inference` (inputs, outputs, driver,
predictor); this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from absl import flags

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax.inference import command_line
from fcn_jax.inference import outputs as outputs_lib
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax.inference import driver
from fcn_jax.inference import inputs


def _define(values: flags.FlagValues) -> None:
  flags.DEFINE_string("checkpoint", None, "training workdir, checkpoint dir "
                      "or weights export dir.", flag_values=values,
                      required=True)
  flags.DEFINE_string("step", checkpointing.DEFAULT_STEP, "which checkpoint "
                      "of a workdir: best (by mean IU; the latest if none was "
                      "evaluated), latest, or a step number.",
                      flag_values=values)
  flags.DEFINE_multi_string("input", None, "image file, folder or glob "
                            "pattern (repeatable).", flag_values=values,
                            required=True)
  flags.DEFINE_string("output", None, "output folder.", flag_values=values,
                      required=True)
  flags.DEFINE_string("hha", None, "NYUD color-HHA: folder of the HHA "
                      "images, named as the --input images, or a pattern "
                      "with {name} for the stem (e.g. 'hha/{name}.png').",
                      flag_values=values)
  flags.DEFINE_string("depth", None, "NYUD color-D: folder (or {name} "
                      "pattern) of the raw depth PNGs, named as the --input "
                      "images.", flag_values=values)
  flags.DEFINE_boolean("save_logits", False, "also write NAME.npz with "
                       "float16 logits [H, W, C].", flag_values=values)
  flags.DEFINE_float("alpha", 0.5, "overlay opacity of the colour mask.",
                     lower_bound=0.0, upper_bound=1.0, flag_values=values)
  flags.DEFINE_boolean("no_overlay", False, "do not write NAME_overlay.jpg.",
                       flag_values=values)
  flags.DEFINE_boolean("no_progress", False, "no progress bar (one without a "
                       "terminal prints plain lines).", flag_values=values)
  flags.DEFINE_boolean("overwrite", False, "replace outputs that exist in "
                       "--output (else an error before any work).",
                       flag_values=values)
  flags.DEFINE_float(
      "max_memory", None, "refuse (and report) images whose forward pass "
      "would need more than this many GiB, before running them (default: the "
      "accelerator's memory, or on CPU the memory available at start); in "
      "fast/exact mode the report suggests --mode slide, which bounds the "
      "memory by the window.", lower_bound=0.0, flag_values=values)
  command_line.define_predictor_flags(values)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """The command's flags; a mistake exits 2 after one line, ``--help`` 0."""
  args = command_line.parse(
      sys.argv[1:] if argv is None else argv, _define,
      prog="python -m fcn_jax.predict",
      doc="Segment images with a trained FCN (docs/inference.md).")
  command_line.converted(args, "step", command_line.step_rule)
  command_line.convert_predictor_flags(args)
  return args


def trained_dataset(metadata: dict) -> str | None:
  """The dataset a training checkpoint's run used (its recorded config), or
  None (weights exports, older checkpoints)."""
  config = metadata.get("config")
  try:
    if isinstance(config, str):
      config = json.loads(config)
    return str(config["dataset"]["name"]) or None
  except (TypeError, KeyError, ValueError):
    return None


def _main(args: argparse.Namespace) -> int:
  # Every check that needs no model first; nothing is created until the
  # checkpoint has loaded.
  command_line.check_predictor_flags(args)
  paths = inputs.find_inputs(args.input)
  outputs_lib.check_output_folder(args.output)
  loaded = checkpointing.load(args.checkpoint, args.step)
  predictor = command_line.make_predictor(args, loaded.model, loaded.variables,
                                          loaded.preprocessing)
  extras = inputs.check_extra_inputs(predictor, loaded.spec.name,
                                     {"hha": args.hha, "depth": args.depth})
  heads = sorted(loaded.spec.head_classes) if loaded.spec.multi_head else None
  cli.check_overwrite(
      outputs_lib.planned_outputs(
          args.output, outputs_lib.output_names(paths), heads,
          save_logits=args.save_logits, write_overlay=not args.no_overlay),
      args.overwrite)
  print(f"Segmenting with {loaded.describe()}.")
  dataset = trained_dataset(loaded.metadata)
  if dataset and dataset.split("/")[0].split(":")[0] == "synthetic_shapes":
    print(f"Note: this model was trained on SYNTHETIC data ({dataset}): its "
          "classes mean nothing on photos.")
  memory_limit = (predictor_lib.available_memory() if args.max_memory is None
                  else int(args.max_memory * 2**30))
  summary = driver.run(predictor, paths, args.output, loaded.class_names,
                       save_logits=args.save_logits, overlay_alpha=args.alpha,
                       write_overlay=not args.no_overlay,
                       progress=not args.no_progress,
                       memory_limit=memory_limit, extra_inputs=extras)
  print(summary.report())
  print(f"Outputs in {os.path.abspath(args.output)}")
  return 1 if summary.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  cli.start(args.xla_cpu_flags, multi_process=False)
  return cli.exit_code(_main, args)


if __name__ == "__main__":
  cli.run_main(main, interrupted="the outputs written so far stay in "
               "--output; rerun with --overwrite to write them all")
