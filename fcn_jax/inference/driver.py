"""Prediction's batch driver: plans the run shapes from the image headers,
refuses what memory cannot hold, runs batches and writes as they finish.

:func:`run` is what ``python -m fcn_jax.predict`` does once its flags are
checked and the checkpoint is loaded; scripts call it with their own
:class:`~fcn_jax.inference.predictor.Predictor`. A file that cannot be read,
an image too large for the memory (:func:`too_large`, checked before anything
is allocated for it) and outputs that cannot be written are recorded in the
:class:`Summary` and the rest carry on.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import time
from typing import Sequence

import numpy as np

from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.inference import inputs as inputs_lib
from fcn_jax.inference import outputs as outputs_lib
from fcn_jax.inference import predictor as predictor_lib

GIB = 2.0**30


@dataclasses.dataclass
class Summary:
  """What a prediction run did.

  Attributes:
    num_compiles: Programs XLA compiled.
    num_cache_loads: Programs loaded from JAX's persistent compilation cache
      instead (not compiles: seconds saved, not spent).
    buckets: The buckets chosen from the inputs (``--buckets auto`` in exact
      mode), else None.
    padding: Their padded pixels over the image pixels.
  """
  num_images: int = 0
  failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  num_compiles: int = 0
  num_cache_loads: int = 0
  run_shapes: set[tuple[int, int]] = dataclasses.field(default_factory=set)
  seconds: float = 0.0
  buckets: tuple[tuple[int, int], ...] | None = None
  padding: float = 0.0

  def report(self) -> str:
    lines = []
    if self.buckets:
      lines.append(
          f"Buckets chosen from the inputs: "
          f"{', '.join(f'{h}x{w}' for h, w in self.buckets)}; padding "
          f"overhead {100 * self.padding:.1f}% of the image pixels.")
    loads = (f" and {self.num_cache_loads} load(s) from the compilation "
             "cache" if self.num_cache_loads else "")
    lines.append(
        f"Segmented {self.num_images} image(s) in {self.seconds:.1f} s; "
        f"{len(self.failures)} failed; {self.num_compiles} compile(s){loads} "
        f"for {len(self.run_shapes)} run shape(s).")
    lines += [f"  FAILED {path}: {message}" for path, message in self.failures]
    return "\n".join(lines)


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
  run_height, run_width = predictor.run_shape(height, width)
  fixes = []
  if predictor.batch_size > 1 and needed / predictor.batch_size < memory_limit:
    fixes.append("pass --batch_size 1")
  if predictor.mode == "slide":
    fixes.append(f"give a smaller --window than {predictor.window}")
    return (f"windows of {run_height}x{run_width} (batch "
            f"{predictor.batch_size}) over this {height}x{width} image need "
            f"about {needed / GIB:.1f} GiB, more than the "
            f"{memory_limit / GIB:.1f} GiB available (--max_memory); "
            f"{' or '.join(fixes)}")
  # Memory grows with the area: the longer side that would fit.
  side = int(max(height, width) * (memory_limit / needed) ** 0.5 * 0.9)
  fixes.append(f"downscale it (to about {side} px on the longer side)")
  window, stride = predictor_lib.slide_settings(predictor_lib.DEFAULT_WINDOW,
                                                None)
  fixes.append(f"run it in tiles with --mode slide (e.g. --window {window} "
               f"--stride {stride})")
  return (f"a forward pass at {run_height}x{run_width} (batch "
          f"{predictor.batch_size}) needs about {needed / GIB:.1f} GiB, more "
          f"than the {memory_limit / GIB:.1f} GiB available (--max_memory); "
          f"{' or '.join(fixes)}")


def _plan(predictor: predictor_lib.Predictor,
          sizes: dict[pathlib.Path, tuple[int, int]],
          memory_limit: int | None, summary: Summary, bar) -> None:
  """Fixes the buckets for the readable images and refuses those too large
  for the memory (removed from ``sizes``). Buckets chosen from the inputs
  are chosen again without the refused images, which may have forced a
  larger bucket on the others."""
  for attempt in range(2):
    if not sizes:
      return
    summary.buckets = predictor.plan(list(sizes.values()))
    refused = {path: reason for path, size in sizes.items()
               if (reason := too_large(predictor, *size, memory_limit))}
    for path, reason in refused.items():
      summary.failures.append((str(path), reason))
      bar.update(1)
      del sizes[path]
    if not refused or summary.buckets is None or attempt:
      break
  if summary.buckets:
    summary.padding = buckets_lib.padding_overhead(
        np.asarray(list(sizes.values())), summary.buckets)


def run(predictor: predictor_lib.Predictor, paths: Sequence[pathlib.Path],
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | dict[str, Sequence[str]],
        save_logits: bool = False, overlay_alpha: float = 0.5,
        write_overlay: bool = True, progress: bool = True,
        memory_limit: int | None = None,
        extra_inputs: dict[str, str] | None = None) -> Summary:
  """Segments ``paths`` with ``predictor`` and writes the outputs.

  Images are grouped by their run shape from their headers (with ``auto``
  buckets in exact mode, at most ``max_buckets`` buckets chosen from all of
  their sizes: :meth:`Predictor.plan`), decoded a batch at a time and written
  as they finish. Files that cannot be read, images whose forward pass would
  need more than ``memory_limit`` bytes (checked before decoding them) and
  outputs that cannot be written are recorded in the summary; the rest carry
  on.

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
    memory_limit: Refuse images that need more bytes than this (None: no
      limit).
    extra_inputs: ``{feature: folder or pattern}`` for the net's other
      features (:func:`fcn_jax.inference.inputs.check_extra_inputs`).
  """
  extras = dict(extra_inputs or {})
  primary = inputs_lib.first_feature(predictor)
  start = time.time()
  compiles, loads = predictor.num_compiles, predictor.num_cache_loads
  output_dir = outputs_lib.prepare_output(output_dir)
  summary = Summary()
  names = dict(zip(paths, outputs_lib.output_names(paths)))
  bar = logging_utils.progress_bar(len(paths), "images", "segmenting",
                                   progress)
  sizes = {}
  for path in paths:
    try:
      sizes[path] = inputs_lib.image_size(path)
    except inputs_lib.InputError as e:
      summary.failures.append((str(path), str(e)))
      bar.update(1)
  _plan(predictor, sizes, memory_limit, summary, bar)
  groups = collections.defaultdict(list)
  for path, size in sizes.items():
    groups[predictor.run_shape(*size)].append(path)
  step = predictor.images_per_call
  for shape, group in groups.items():
    summary.run_shapes.add(shape)
    for first in range(0, len(group), step):
      batch_paths, images = [], []
      for path in group[first:first + step]:
        try:
          images.append(inputs_lib.load_example(path, primary, extras))
          batch_paths.append(path)
        except inputs_lib.InputError as e:
          summary.failures.append((str(path), str(e)))
          bar.update(1)
      if not images:
        continue
      try:  # Labels alone where they suffice (slide mode: bounded memory).
        batch_logits = (predictor.predict_logits(images) if save_logits
                        else predictor.predict(images))
      except errors.UserError as e:  # E.g. a depth map with holes.
        summary.failures += [(str(p), str(e)) for p in batch_paths]
        bar.update(len(batch_paths))
        continue
      for path, example, logits in zip(batch_paths, images, batch_logits):
        bar.update(1)
        try:
          outputs_lib.write_outputs(output_dir, names[path], example[primary],
                                    logits, class_names, save_logits,
                                    overlay_alpha, write_overlay)
        except OSError as e:  # E.g. a full disk.
          summary.failures.append((str(path), f"cannot write its outputs in "
                                   f"{output_dir}: {e.strerror or e}"))
          continue
        summary.num_images += 1
  bar.close()
  summary.num_compiles = predictor.num_compiles - compiles
  summary.num_cache_loads = predictor.num_cache_loads - loads
  summary.seconds = time.time() - start
  return summary
