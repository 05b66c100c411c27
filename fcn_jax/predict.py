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
``--mode`` and ``--buckets``) and batched, so a folder of mixed sizes compiles
once per bucket. For images larger than memory allows, ``--mode slide
--window 512 --stride 384`` tiles each image with overlapping windows, runs
them ``--batch_size`` at a time (one compile) and averages their logits
where they overlap (docs/inference.md). 16-bit images are scaled to 8 bits
as viewers show them. An unreadable file, an image whose forward pass would
need more memory than there is (``--max_memory``; checked before anything is
allocated for it; the report suggests ``--mode slide``, it does not switch
by itself) and outputs that cannot be written are reported and skipped; a
summary ends the run, and the exit status is 1 if any input failed. An output
folder that cannot be written, and outputs that exist already (without
``--overwrite``), are errors (exit status 2) before any work.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax import logging_utils
from fcn_jax.inference import tta
from fcn_jax import visualize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                  ".webp", ".ppm", ".pgm")
# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class InputError(ValueError):
  """An input that cannot be used (missing, not an image, corrupt)."""


def find_inputs(patterns: Sequence[str]) -> list[pathlib.Path]:
  """Expands files, folders (their images) and glob patterns, in order.

  Raises:
    InputError: If a pattern matches nothing.
  """
  paths: list[pathlib.Path] = []
  for pattern in patterns:
    path = pathlib.Path(pattern)
    if path.is_dir():
      found = sorted(p for p in path.iterdir()
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
      if not found:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder "
                         f"{path}")
    elif path.is_file():
      found = [path]
    else:
      found = sorted(pathlib.Path(p) for p in glob.glob(pattern)
                     if os.path.isfile(p))
      if not found:
        raise InputError(f"--input {pattern!r} matches no file")
    paths.extend(p for p in found if p not in paths)
  return paths


def output_names(paths: Sequence[pathlib.Path]) -> list[str]:
  """Output base names: the file stem, or ``stem_ext`` where stems clash."""
  stems = collections.Counter(p.stem for p in paths)
  names = []
  for p in paths:
    name = p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.')}"
    if name in names:  # Same name in two folders.
      name = f"{name}_{len(names)}"
    names.append(name)
  return names


def image_size(path: pathlib.Path) -> tuple[int, int]:
  """``(height, width)`` as the image will be decoded, from its header."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f"cannot read image {path}: {e}") from e
  return height, width


def to_rgb8(image: Image.Image, path: pathlib.Path) -> np.ndarray:
  """uint8 RGB ``[H, W, 3]`` of a decoded image.

  16-bit images are scaled to 8 bits as viewers show them: PIL reads 16-bit
  colour PNGs as their high bytes, and grey ones (modes ``I;16*``, ``I``),
  which its ``convert`` would clip at 255, get their high bytes here too.
  Floating-point images have no standard 8-bit view and are refused.

  Raises:
    InputError: A floating-point image, or integers beyond 16 bits.
  """
  if image.mode.startswith("I"):
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise InputError(
          f"{path}: a {image.mode} image with values outside 0..65535, which "
          "has no standard 8-bit view; convert it to 8-bit RGB first")
    grey = (values >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode == "F":
    raise InputError(f"{path}: a floating-point image (mode F) has no "
                     "standard 8-bit view; convert it to 8-bit RGB first")
  return np.asarray(image.convert("RGB"))


def load_image(path: pathlib.Path) -> np.ndarray:
  """Decodes an image as uint8 RGB ``[H, W, 3]``, upright per its EXIF tag
  (16-bit images scaled to 8 bits, see :func:`to_rgb8`)."""
  try:
    with Image.open(path) as image:
      return to_rgb8(ImageOps.exif_transpose(image), path)
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"cannot decode image {path}: {e}") from e


def prepare_output(path: str | os.PathLike) -> pathlib.Path:
  """Creates the output folder and checks that files can be written there.

  Raises:
    InputError: It is a file, under a file, or not writable.
  """
  folder = pathlib.Path(path)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except FileExistsError:
    raise InputError(f"--output {path} is a file; give a folder") from None
  except NotADirectoryError:
    raise InputError(f"--output {path} is under a file, not a folder; give "
                     "a folder") from None
  except OSError as e:
    raise InputError(f"cannot write in --output {path}: {e.strerror or e}; "
                     "give a folder you can write to") from None
  return folder


def too_large(predictor: predictor_lib.Predictor, height: int, width: int,
              memory_limit: int | None) -> str | None:
  """Why an image of this size cannot be segmented within ``memory_limit``
  bytes (None: it can, or the limit is unknown), before anything is
  allocated for it."""
  if memory_limit is None:
    return None
  needed = predictor.memory_bytes(height, width)
  if needed <= memory_limit:
    return None
  gib = 2.0**30
  run_height, run_width = predictor.run_shape(height, width)
  fixes = []
  if predictor.batch_size > 1 and needed / predictor.batch_size < memory_limit:
    fixes.append("pass --batch_size 1")
  if predictor.mode == "slide":
    fixes.append(f"give a smaller --window than {predictor.window}")
    return (f"windows of {run_height}x{run_width} (batch "
            f"{predictor.batch_size}) over this {height}x{width} image need "
            f"about {needed / gib:.1f} GiB, more than the "
            f"{memory_limit / gib:.1f} GiB available (--max_memory); "
            f"{' or '.join(fixes)}")
  # Memory grows with the area: the longer side that would fit.
  side = int(max(height, width) * (memory_limit / needed) ** 0.5 * 0.9)
  fixes.append(f"downscale it (to about {side} px on the longer side)")
  window, stride = predictor_lib.slide_settings(predictor_lib.DEFAULT_WINDOW, None)
  fixes.append(f"run it in tiles with --mode slide (e.g. --window {window} "
               f"--stride {stride})")
  return (f"a forward pass at {run_height}x{run_width} (batch "
          f"{predictor.batch_size}) needs about {needed / gib:.1f} GiB, more "
          f"than the {memory_limit / gib:.1f} GiB available (--max_memory); "
          f"{' or '.join(fixes)}")


def load_depth(path: pathlib.Path) -> np.ndarray:
  """Decodes a one-channel depth PNG as its raw values ``[H, W]``."""
  try:
    with Image.open(path) as image:
      depth = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f"cannot decode depth map {path}: {e}") from e
  if depth.ndim != 2:
    raise InputError(f"{path}: a depth map has one channel, this has shape "
                     f"{depth.shape}")
  if depth.size and depth.min() <= 0:
    raise InputError(f"{path}: depth values <= 0 (the net takes "
                     "log(depth); fill the holes first)")
  return depth


# The features a net may read besides its first one, with their flags and
# loaders (docs/reference.md §8.2).
EXTRA_SOURCES = {"hha": ("--hha", load_image), "depth": ("--depth",
                                                          load_depth)}


def matching_file(locator: str, path: pathlib.Path) -> pathlib.Path:
  """The file of another input that belongs with the image ``path``.

  Args:
    locator: A folder (the file with the same stem and an image suffix) or
      a pattern in which ``{name}`` stands for the stem.
    path: The ``--input`` image.

  Raises:
    InputError: No such file (or several candidates in the folder).
  """
  if "{name}" in locator:
    found = pathlib.Path(locator.replace("{name}", path.stem))
    if not found.is_file():
      raise InputError(f"no {found} for {path}")
    return found
  folder = pathlib.Path(locator)
  candidates = sorted(p for p in folder.glob(glob.escape(path.stem) + ".*")
                      if p.suffix.lower() in IMAGE_SUFFIXES)
  if len(candidates) != 1:
    raise InputError(
        f"{'no' if not candidates else 'several'} {path.stem}.<image "
        f"suffix> in {folder} for {path}"
        + (f": {[c.name for c in candidates]}" if candidates else ""))
  return candidates[0]


def load_example(path: pathlib.Path, primary: str,
                 extras: dict[str, str]) -> dict[str, np.ndarray]:
  """The arrays of one example: the ``--input`` image as ``primary`` and each
  other feature from its matching file (``extras``: feature -> locator)."""
  example = {primary: load_image(path)}
  for feature, locator in extras.items():
    example[feature] = EXTRA_SOURCES[feature][1](matching_file(locator, path))
  sizes = {k: v.shape[:2] for k, v in example.items()}
  if len(set(sizes.values())) > 1:
    raise InputError(f"{path}: the images of this example differ in size: "
                     f"{sizes}")
  return example


@dataclasses.dataclass
class Summary:
  """What a prediction run did."""
  num_images: int = 0
  failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  num_compiles: int = 0
  run_shapes: set[tuple[int, int]] = dataclasses.field(default_factory=set)
  seconds: float = 0.0

  def report(self) -> str:
    lines = [f"Segmented {self.num_images} image(s) in {self.seconds:.1f} s; "
             f"{len(self.failures)} failed; {self.num_compiles} compile(s) for "
             f"{len(self.run_shapes)} run shape(s)."]
    lines += [f"  FAILED {path}: {message}" for path, message in self.failures]
    return "\n".join(lines)


def write_outputs(output_dir: pathlib.Path, name: str, image: np.ndarray,
                  logits: np.ndarray | dict[str, np.ndarray],
                  class_names: Sequence[str] | dict[str, Sequence[str]],
                  save_logits: bool = False, overlay_alpha: float = 0.5,
                  write_overlay: bool = True) -> None:
  """Writes ``NAME.png``, ``NAME_overlay.jpg`` and (optionally) ``NAME.npz``;
  for a dict of logits (a multi-head net) ``NAME_<head>.png`` and
  ``NAME_<head>_overlay.jpg`` per head, and ``logits_<head>`` arrays.
  Without ``save_logits``, ``logits`` may be the labels ``[H, W]`` already
  taken from them."""
  if isinstance(logits, dict):
    heads = {f"{name}_{head}": (value, class_names[head])
             for head, value in logits.items()}
    arrays = {f"logits_{head}": value for head, value in logits.items()}
  else:
    heads = {name: (logits, class_names)}
    arrays = {"logits": logits}
  for stem, (head_logits, names) in heads.items():
    labels = (head_logits if head_logits.ndim == 2
              else head_logits.argmax(-1)).astype(np.uint8)
    visualize.write_label_png(output_dir / f"{stem}.png", labels)
    if write_overlay:
      picture = visualize.overlay(image, labels, alpha=overlay_alpha,
                                  class_names=names)
      picture.save(output_dir / f"{stem}_overlay.jpg", quality=90)
  if save_logits:
    np.savez(output_dir / f"{name}.npz",
             **{k: v.astype(np.float16) for k, v in arrays.items()})


def run(predictor: predictor_lib.Predictor, paths: Sequence[pathlib.Path],
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | dict[str, Sequence[str]],
        save_logits: bool = False, overlay_alpha: float = 0.5,
        write_overlay: bool = True, progress: bool = True,
        memory_limit: int | None = None,
        extra_inputs: dict[str, str] | None = None) -> Summary:
  """Segments ``paths`` with ``predictor`` and writes the outputs.

  Images are grouped by their run shape (bucket) from their headers, decoded a
  batch at a time and written as they finish. Files that cannot be read,
  images whose forward pass would need more than ``memory_limit`` bytes
  (checked before decoding them) and outputs that cannot be written are
  recorded in the summary; the rest carry on.

  Args:
    predictor: The predictor.
    paths: The ``--input`` images (the net's first feature).
    output_dir: Where the outputs go.
    class_names: For the overlay legends (a dict keyed by head for a
      multi-head net).
    save_logits: Also write ``NAME.npz``.
    overlay_alpha: Opacity of the colour mask.
    write_overlay: Write the overlays.
    progress: Show a progress bar.
    extra_inputs: ``{feature: folder or pattern}`` for the net's other
      features (:func:`check_extra_inputs`).
  """
  extras = dict(extra_inputs or {})
  primary = first_feature(predictor)
  start = time.time()
  output_dir = prepare_output(output_dir)
  summary = Summary()
  names = dict(zip(paths, output_names(paths)))
  groups = collections.defaultdict(list)
  bar = logging_utils.progress_bar(len(paths), "images", "segmenting",
                                   progress)
  for path in paths:
    try:
      size = image_size(path)
    except InputError as e:
      summary.failures.append((str(path), str(e)))
      bar.update(1)
      continue
    refusal = too_large(predictor, *size, memory_limit)
    if refusal:
      summary.failures.append((str(path), refusal))
      bar.update(1)
      continue
    groups[predictor.run_shape(*size)].append(path)
  step = predictor.images_per_call
  for shape, group in groups.items():
    summary.run_shapes.add(shape)
    for first in range(0, len(group), step):
      batch_paths, images = [], []
      for path in group[first:first + step]:
        try:
          images.append(load_example(path, primary, extras))
          batch_paths.append(path)
        except InputError as e:
          summary.failures.append((str(path), str(e)))
          bar.update(1)
      if not images:
        continue
      try:  # Labels alone where they suffice (slide mode: bounded memory).
        batch_logits = (predictor.predict_logits(images) if save_logits
                        else predictor.predict(images))
      except ValueError as e:  # E.g. a depth map with holes.
        summary.failures += [(str(p), str(e)) for p in batch_paths]
        bar.update(len(batch_paths))
        continue
      for path, example, logits in zip(batch_paths, images, batch_logits):
        bar.update(1)
        try:
          write_outputs(output_dir, names[path], example[primary], logits,
                        class_names, save_logits, overlay_alpha,
                        write_overlay)
        except OSError as e:  # E.g. a full disk.
          summary.failures.append((str(path), f"cannot write its outputs in "
                                   f"{output_dir}: {e.strerror or e}"))
          continue
        summary.num_images += 1
  bar.close()
  summary.num_compiles = predictor.num_compiles
  summary.seconds = time.time() - start
  return summary


def first_feature(predictor: predictor_lib.Predictor) -> str:
  """The feature ``--input`` gives: the first one the net reads."""
  return next(iter(predictor.input_sources.values()))[0]


def check_extra_inputs(predictor: predictor_lib.Predictor, model_name: str,
                       given: dict[str, str | None]) -> dict[str, str]:
  """The ``--hha``/``--depth`` locators the net needs, checked.

  Raises:
    InputError: A needed one is missing, an unneeded one is given, or a
      folder does not exist.
  """
  needed = {f for fs in predictor.input_sources.values() for f in fs}
  needed.discard(first_feature(predictor))
  extras = {}
  for feature, (flag, _) in EXTRA_SOURCES.items():
    locator = given.get(feature)
    if feature in needed and not locator:
      raise InputError(
          f"{model_name} also reads {feature} images: pass {flag} FOLDER "
          f"(files named like the --input images) or {flag} "
          f"'PATTERN/{{name}}.png'")
    if feature not in needed and locator:
      raise InputError(f"{model_name} does not read {feature} images; drop "
                       f"{flag}")
    if locator:
      if "{name}" not in locator and not os.path.isdir(locator):
        raise InputError(f"{flag} {locator}: no such folder (or give a "
                         "pattern with {name})")
      extras[feature] = locator
  return extras


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
  """The flags that configure a :class:`fcn_jax.inference.predictor.Predictor`."""
  parser.add_argument(
      "--mode", choices=predictor_lib.MODES, default="fast",
      help="fast: pad to shape buckets and batch; exact: the native-size "
      "logits of the reference deploy net, at the same buckets, batched (the "
      "net masks the padding; native size one shape at a time with --flip, "
      "--scales or --shift_stitch); slide: overlapping --window tiles, batched "
      "(--batch_size windows per pass), logits averaged where they overlap, "
      "for images too large for memory. Default: fast. An image too large "
      "for fast/exact is reported and skipped with the slide command to use "
      "(never switched silently: slide's labels differ near window borders).")
  parser.add_argument(
      "--window", type=int, default=None, metavar="PX",
      help=f"slide mode: side of the square windows (default "
      f"{predictor_lib.DEFAULT_WINDOW}; images smaller than it are padded to it).")
  parser.add_argument(
      "--stride", type=int, default=None, metavar="PX",
      help="slide mode: distance between windows, at most --window (default "
      f"{predictor_lib.DEFAULT_STRIDE_FRACTION:g} of the window: 384 for 512).")
  parser.add_argument(
      "--buckets", default="32", type=predictor_lib.parse_buckets,
      help="fast and exact mode: round sizes up to this multiple (default "
      "32), or a list of HxW sizes such as 384x512,512x384.")
  parser.add_argument("--batch_size", type=int, default=4,
                      help="images per forward pass (default 4; slide mode: "
                      "windows per pass, one image at a time).")
  parser.add_argument("--flip", action="store_true",
                      help="test-time augmentation: average with the "
                      "horizontally flipped image.")
  parser.add_argument(
      "--scales", default="1.0", type=lambda s: tta.from_flags(scales=s).scales,
      help="test-time augmentation: comma-separated scales whose logits are "
      "averaged, e.g. 0.75,1.0,1.25 (default 1.0).")
  parser.add_argument(
      "--shift_stitch", type=int, default=1, metavar="F",
      help="replace the final upsampler by shift-and-stitch with FxF shifted "
      "passes (F must divide the net's stride 32/16/8; default 1: off).")


def check_inference_flags(args: argparse.Namespace) -> None:
  """Checks :func:`add_inference_flags`' flags together and fills in slide
  mode's window and stride, before anything is loaded.

  Raises:
    InputError: ``--window``/``--stride`` without ``--mode slide``, or values
      that cannot tile an image.
  """
  if args.mode != "slide":
    given = [f for f, v in (("--window", args.window),
                            ("--stride", args.stride)) if v is not None]
    if given:
      raise InputError(f"{' and '.join(given)} apply to --mode slide only; "
                       f"add --mode slide or drop {' and '.join(given)}")
    return
  window = predictor_lib.DEFAULT_WINDOW if args.window is None else args.window
  try:
    args.window, args.stride = predictor_lib.slide_settings(window, args.stride)
  except ValueError as e:
    given = f"--window {window}" + (
        "" if args.stride is None else f" --stride {args.stride}")
    raise InputError(f"{given}: {e}") from None
  if args.batch_size < 1:
    raise InputError(f"--batch_size must be >= 1, got {args.batch_size}")


def make_predictor(args: argparse.Namespace, model, variables,
                   preprocessing) -> predictor_lib.Predictor:
  """A Predictor configured by :func:`add_inference_flags`' flags (checked by
  :func:`check_inference_flags`)."""
  slide = ({"window": args.window, "stride": args.stride}
           if args.mode == "slide" else {})
  return predictor_lib.Predictor(
      model, variables, preprocessing, mode=args.mode, buckets=args.buckets,
      batch_size=args.batch_size, flip=args.flip, scales=args.scales,
      shift_stitch=args.shift_stitch, **slide)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog="python -m fcn_jax.predict",
      description="Segment images with a trained FCN.")
  parser.add_argument("--checkpoint", required=True,
                      help="training workdir, checkpoint dir or weights "
                      "export dir.")
  parser.add_argument("--step", default=checkpointing.DEFAULT_STEP,
                      type=checkpointing.parse_step,
                      help="which checkpoint of a workdir: best (by mean IU; "
                      "the latest if none was evaluated; the default), "
                      "latest, or a step number.")
  parser.add_argument("--input", required=True, action="append",
                      help="image file, folder or glob pattern (repeatable).")
  parser.add_argument("--output", required=True, help="output folder.")
  parser.add_argument("--hha", default=None,
                      help="NYUD color-HHA: folder of the HHA images, named "
                      "as the --input images, or a pattern with {name} for "
                      "the stem (e.g. 'hha/{name}.png').")
  parser.add_argument("--depth", default=None,
                      help="NYUD color-D: folder (or {name} pattern) of the "
                      "raw depth PNGs, named as the --input images.")
  parser.add_argument("--save_logits", action="store_true",
                      help="also write NAME.npz with float16 logits [H, W, C].")
  parser.add_argument("--alpha", type=float, default=0.5,
                      help="overlay opacity of the colour mask (default 0.5).")
  parser.add_argument("--no_overlay", action="store_true",
                      help="do not write NAME_overlay.jpg.")
  parser.add_argument("--no_progress", action="store_true",
                      help="no progress bar.")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace outputs that exist in --output (else "
                      "an error before any work).")
  parser.add_argument(
      "--max_memory", type=float, default=None, metavar="GIB",
      help="refuse (and report) images whose forward pass would need more "
      "than this many GiB, before running them (default: the accelerator's "
      "memory, or on CPU the memory available at start); in fast/exact mode "
      "the report suggests --mode slide, which bounds the memory by the "
      "window.")
  add_inference_flags(parser)
  return parser.parse_args(argv)


def planned_outputs(output_dir: str, names: Sequence[str],
                    heads: Sequence[str] | None, *, save_logits: bool,
                    write_overlay: bool) -> list[str]:
  """The files :func:`write_outputs` will write for these names (``heads``:
  a multi-head net's heads, else None)."""
  files = []
  for name in names:
    stems = [f"{name}_{head}" for head in heads] if heads else [name]
    for stem in stems:
      files.append(os.path.join(output_dir, f"{stem}.png"))
      if write_overlay:
        files.append(os.path.join(output_dir, f"{stem}_overlay.jpg"))
    if save_logits:
      files.append(os.path.join(output_dir, f"{name}.npz"))
  return files


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
  check_inference_flags(args)
  paths = find_inputs(args.input)
  prepare_output(args.output)
  loaded = checkpointing.load(args.checkpoint, args.step)
  predictor = make_predictor(args, loaded.model, loaded.variables,
                             loaded.preprocessing)
  extras = check_extra_inputs(predictor, loaded.spec.name,
                              {"hha": args.hha, "depth": args.depth})
  heads = sorted(loaded.spec.head_classes) if loaded.spec.multi_head else None
  cli.check_overwrite(
      planned_outputs(args.output, output_names(paths), heads,
                      save_logits=args.save_logits,
                      write_overlay=not args.no_overlay), args.overwrite)
  print(f"Segmenting with {loaded.describe()}.")
  dataset = trained_dataset(loaded.metadata)
  if dataset and dataset.split("/")[0].split(":")[0] == "synthetic_shapes":
    print(f"Note: this model was trained on SYNTHETIC data ({dataset}): its "
          "classes mean nothing on photos.")
  memory_limit = (predictor_lib.available_memory() if args.max_memory is None
                  else int(args.max_memory * 2**30))
  summary = run(predictor, paths, args.output, loaded.class_names,
                save_logits=args.save_logits, overlay_alpha=args.alpha,
                write_overlay=not args.no_overlay,
                progress=not args.no_progress, memory_limit=memory_limit,
                extra_inputs=extras)
  print(summary.report())
  print(f"Outputs in {os.path.abspath(args.output)}")
  return 1 if summary.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  cli.start(multi_process=False)
  return cli.exit_code(_main, args)


if __name__ == "__main__":
  sys.exit(main())
