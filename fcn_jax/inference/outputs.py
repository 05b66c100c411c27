"""Prediction's outputs: names, the checks before any work, and the writers.

For every input image ``NAME.ext`` prediction writes ``NAME.png`` (class
indices as a VOC-palette PNG), ``NAME_overlay.jpg`` (the image blended with
the colour mask, with a legend) and, optionally, ``NAME.npz`` (float16
logits); a two-headed net writes ``NAME_<head>.png`` ... per head.

The output folder is checked before the checkpoint is read
(:func:`check_output_folder`, which creates nothing) and created only once
the work can start (:func:`prepare_output`), so a mistake leaves no empty
folder behind.
"""

from __future__ import annotations

import collections
import os
import pathlib
import tempfile
from typing import Sequence

import numpy as np

from fcn_jax import visualize
from fcn_jax.inference.inputs import InputError


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


def _cannot_write(path: str | os.PathLike, error: OSError) -> InputError:
  return InputError(f"cannot write in --output {path}: "
                    f"{error.strerror or error}; give a folder you can "
                    "write to")


def nearest_existing(path: str | os.PathLike) -> pathlib.Path:
  """``path`` or its nearest ancestor that exists: where creating it would
  start."""
  existing = pathlib.Path(os.path.abspath(path))
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  return existing


def check_output_folder(path: str | os.PathLike) -> None:
  """Checks that ``path`` is, or can become, a folder to write in, without
  creating anything.

  Raises:
    InputError: It is a file, under a file, or not writable.
  """
  folder = pathlib.Path(path)
  if folder.exists() and not folder.is_dir():
    raise InputError(f"--output {path} is a file; give a folder")
  existing = nearest_existing(folder)
  if not existing.is_dir():
    raise InputError(f"--output {path} is under a file, not a folder; give "
                     "a folder")
  if existing == folder:
    try:
      with tempfile.TemporaryFile(dir=folder):
        pass
    except OSError as e:
      raise _cannot_write(path, e) from None
  elif not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"cannot create --output {path}: {existing} is not "
                     "writable; give a folder you can write to")


def prepare_output(path: str | os.PathLike) -> pathlib.Path:
  """Creates the output folder and checks that files can be written there.

  Raises:
    InputError: It is a file, under a file, or not writable.
  """
  check_output_folder(path)
  folder = pathlib.Path(path)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise _cannot_write(path, e) from None
  return folder


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
