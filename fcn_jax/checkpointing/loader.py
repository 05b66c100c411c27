"""The one loader of saved models: a weights export or a training checkpoint.

:func:`load` opens a weights export, a training workdir, its ``checkpoints``
directory or one step directory, picks the step with the one rule of every
command (:data:`~fcn_jax.checkpointing.layout.STEP_RULES`), and checks that
the parameters fit the model the metadata names. It only reads: nothing
process-wide is installed and no lock is taken.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import jax
import numpy as np

from fcn_jax import models
from fcn_jax.checkpointing import metadata as metadata_lib
from fcn_jax.checkpointing import weights_export
from fcn_jax.checkpointing.checkpointer import Checkpointer
from fcn_jax.checkpointing.layout import (
    BEST, CHECKPOINT_DIR, DEFAULT_STEP, LATEST, WEIGHTS_METADATA_FILE,
    CheckpointError, DamagedCheckpointError, SourceNotFoundError, is_step_dir,
    parse_step)
from fcn_jax.data import preprocessing as preprocessing_lib

Params = dict[str, dict[str, np.ndarray]]



@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A saved model, ready to run.

  Attributes:
    spec: The model, as recorded (with any compute overrides).
    params: NumPy parameters keyed by Caffe layer name.
    preprocessing: The inputs the weights expect.
    metadata: Everything recorded with them.
    path: The directory they were read from (a step directory or an export).
    step: The training step, or None for a weights export.
    step_reason: Why this step was picked (for the logs), or ``""``.
  """
  spec: models.ModelSpec
  params: Params
  preprocessing: preprocessing_lib.Preprocessing
  metadata: dict[str, Any]
  path: str
  step: int | None
  step_reason: str = ""

  @property
  def model(self) -> models.FCN:
    return self.spec.create()

  @property
  def variables(self) -> dict[str, Params]:
    return {"params": self.params}

  @property
  def class_names(self) -> list[str] | dict[str, list[str]]:
    return metadata_lib.class_names(self.metadata)

  def describe(self) -> str:
    """One line for the logs: which parameters these are and why."""
    what = f"{self.spec.name} ({self.spec.num_classes} classes)"
    if self.step is None:
      return f"{what} from the weights export {self.path}"
    return (f"{what} from {self.path}: step {self.step}, "
            f"{self.step_reason}")


def existing_source(path: str) -> str:
  """The absolute ``path`` of weights or a checkpoint, which must exist.

  Raises:
    SourceNotFoundError: Nothing is there; the message says how to make it.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise SourceNotFoundError(
        f"no such weights or checkpoint: {path} (convert pretrained files "
        "with python -m fcn_jax.convert, see the README's 'Pretrained "
        "weights', or give a training workdir)")
  return path


def _read_training_checkpoint(path: str, step: str | int
                              ) -> tuple[Params, dict[str, Any], str, int,
                                         str]:
  """``(params, metadata, step_dir, step, reason)`` from a training path."""
  if is_step_dir(path):
    checkpoints_dir, name = os.path.split(os.path.normpath(path))
    if step not in (BEST, LATEST) and step != int(name):
      raise CheckpointError(f"{path} is step {name}, not the requested step "
                            f"{step}; give the workdir to pick a step")
    step, reason = int(name), "the step directory given"
  else:
    checkpoints_dir = path
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
      checkpoints_dir = os.path.join(path, CHECKPOINT_DIR)
    reason = ""
  if os.path.basename(checkpoints_dir) != CHECKPOINT_DIR:
    raise CheckpointError(
        f"{path} is neither a weights export (no {WEIGHTS_METADATA_FILE}), a "
        f"training workdir (no {CHECKPOINT_DIR}/) nor a checkpoint step "
        "directory")
  checkpointer = Checkpointer(os.path.dirname(checkpoints_dir),
                              read_only=True)
  try:
    if not reason:
      step, reason = checkpointer.select(step)
    try:
      params, metadata = checkpointer.restore_params(step)
    except DamagedCheckpointError as e:
      others = [s for s in checkpointer.all_steps() if s != step]
      kept = (f"the others kept: {', '.join(map(str, others))}" if others
              else "no other step is kept")
      raise DamagedCheckpointError(
          e.directory, f"{e.reason}. Pick another step with --step ({kept}); "
          "resuming the training sets damaged checkpoints aside") from None
  finally:
    checkpointer.close()
  return params, metadata, f"{checkpoints_dir}/{step}", step, reason


def load(path: str, step: str | int = DEFAULT_STEP,
         **spec_overrides: Any) -> LoadedModel:
  """Loads any saved model: a weights export or a training checkpoint.

  Args:
    path: A weights export, a training workdir, its ``checkpoints``
      directory, or one checkpoint step directory.
    step: Which step of a workdir (:data:`STEP_RULES`): ``"best"`` (default),
      ``"latest"`` or a number. Ignored for exports and step directories
      unless it contradicts them.
    **spec_overrides: Compute options for the rebuilt model (``dtype``).

  Returns:
    A :class:`LoadedModel` whose parameters have been checked to fit the
    model its metadata names.

  Raises:
    SourceNotFoundError: Nothing at ``path``.
    CheckpointError: Not a checkpoint, no such step, or parameters that do
      not fit the recorded model.
  """
  path = existing_source(path)
  step = parse_step(step)
  if weights_export.is_weights_export(path):
    if step not in (BEST, LATEST):
      raise CheckpointError(f"{path} is a weights export, which has no "
                            f"steps; --step {step} applies to workdirs")
    params, metadata = weights_export.read_weights_export(path)
    where, number, reason = path, None, ""
  else:
    params, metadata, where, number, reason = _read_training_checkpoint(
        path, step)
    metadata["source"] = {**(metadata.get("source") or {}),
                          "checkpoint": where}
  if "preprocessing" not in metadata:
    raise CheckpointError(f"{where}: metadata does not record the "
                          "preprocessing")
  try:
    spec = metadata_lib.model_spec(metadata, **spec_overrides)
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{where}: the metadata does not describe a model "
                          f"({e})") from None
  expected = jax.tree.map(lambda x: tuple(x.shape),
                          models.param_shapes(spec.create()))
  if jax.tree.map(np.shape, params) != expected:
    raise CheckpointError(
        f"{where}: its params do not fit {spec.name} with "
        f"num_classes={spec.num_classes} and options "
        f"{spec.shape_options()}; convert the weights again.")
  loaded = LoadedModel(
      spec=spec, params=params,
      preprocessing=preprocessing_lib.Preprocessing.from_dict(
          metadata["preprocessing"]),
      metadata=metadata, path=where, step=number, step_reason=reason)
  logging.info("Loaded %s", loaded.describe())
  return loaded
