"""Weights exports: a model's parameters and metadata in one directory.

Written by ``python -m fcn_jax.convert`` (and by anyone with parameters and
:func:`fcn_jax.checkpointing.make_metadata`)::

  DIR/params/               Orbax PyTree: the parameters
  DIR/fcn_jax_weights.json  the metadata, plus the source file, its SHA-256
                            and the load report
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from fcn_jax import logging_utils
from fcn_jax.checkpointing import layout
from fcn_jax.checkpointing.layout import CheckpointError

Params = dict[str, dict[str, np.ndarray]]


def is_weights_export(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, layout.WEIGHTS_METADATA_FILE))


def _first_missing_ancestor(path: str) -> str | None:
  missing = None
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def save_weights(directory: str, params: Mapping[str, Any],
                 metadata: Mapping[str, Any], *,
                 overwrite: bool = False) -> str:
  """Writes a weights export atomically: all of it, or nothing.

  Args:
    directory: The directory to create.
    params: The params tree (NumPy or JAX arrays).
    metadata: From :func:`make_metadata`.
    overwrite: Replace an existing non-empty ``directory``.

  Returns:
    The absolute path of the export.

  Raises:
    CheckpointError: ``directory`` exists and is a file, or is non-empty and
      ``overwrite`` is False.
  """
  directory = os.path.abspath(directory)
  if os.path.isfile(directory):
    raise CheckpointError(f"{directory} is a file; choose a directory to "
                          "write.")
  if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
    raise CheckpointError(f"{directory} exists and is not empty; choose "
                          "another --output or pass --overwrite.")
  text = json.dumps(logging_utils.to_json(
      {**metadata, "format_version": layout.FORMAT_VERSION}), indent=2)
  parent = os.path.dirname(directory)
  created = _first_missing_ancestor(parent)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-"
                     f"{uuid.uuid4().hex[:8]}")
  backup = tmp + "-old"
  try:
    os.mkdir(tmp)
    host = jax.tree.map(np.asarray, dict(params))
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, layout.PARAMS_ITEM), host)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, layout.WEIGHTS_METADATA_FILE), "w") as f:
      f.write(text + "\n")
    if os.path.exists(directory):
      os.rename(directory, backup)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if os.path.exists(backup) and not os.path.exists(directory):
      os.rename(backup, directory)
    if created:
      shutil.rmtree(created, ignore_errors=True)
    raise
  shutil.rmtree(backup, ignore_errors=True)
  return directory


def load_metadata(directory: str) -> dict[str, Any]:
  """Reads and checks a weights export's metadata only (cheap)."""
  path = os.path.join(directory, layout.WEIGHTS_METADATA_FILE)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such directory (expected a "
                          "weights export written by python -m "
                          "fcn_jax.convert).")
  if not os.path.isfile(path):
    raise CheckpointError(
        f"{directory} is not an fcn_jax weights export: it has no "
        f"{layout.WEIGHTS_METADATA_FILE}. Convert weight files with python -m "
        "fcn_jax.convert, or give a training workdir.")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: unreadable metadata ({e}).") from None
  if not isinstance(metadata, dict):
    raise CheckpointError(f"{path}: the metadata is not a JSON object.")
  version = metadata.get("format_version")
  if version != layout.FORMAT_VERSION:
    raise CheckpointError(f"{path}: format_version {version!r}; this fcn_jax "
                          f"reads version {layout.FORMAT_VERSION}.")
  for key in ("model", "num_classes", "preprocessing"):
    if key not in metadata:
      raise CheckpointError(f"{path}: metadata lacks {key!r}.")
  return metadata


def read_weights_export(directory: str) -> tuple[Params, dict[str, Any]]:
  metadata = load_metadata(directory)
  params_dir = os.path.join(directory, layout.PARAMS_ITEM)
  if not os.path.isdir(params_dir):
    raise CheckpointError(f"{directory}: the {layout.PARAMS_ITEM}/ directory "
                          "is missing; convert the weights again.")
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(params_dir)
  except Exception as e:  # Orbax raises several types for damaged data.
    raise CheckpointError(f"{params_dir}: cannot restore "
                          f"({type(e).__name__}: {e}); convert the weights "
                          "again.") from None
  return jax.tree.map(np.asarray, dict(restored)), metadata


