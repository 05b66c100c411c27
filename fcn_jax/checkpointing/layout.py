"""The names on disk, the step rule and the errors of every saved model.

What a training workdir and a weights export hold is described in the
package's docstring (:mod:`fcn_jax.checkpointing`); this module is the one
place for their names, for the rule that picks a step (:data:`STEP_RULES`,
shared by every command's ``--step``) and for the errors the readers raise.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from fcn_jax import errors

CHECKPOINT_DIR = "checkpoints"
PARAMS_ITEM = "params"
TRAIN_STATE_ITEM = "train_state"
DATA_ITER_ITEM = "data_iter"
METADATA_ITEM = "metadata"
# A weights export: the metadata file beside an Orbax params/ directory.
WEIGHTS_METADATA_FILE = "fcn_jax_weights.json"
FORMAT_VERSION = 1
BEST, LATEST = "best", "latest"
STEP_RULES = (BEST, LATEST, "<step number>")
DEFAULT_STEP = BEST
# Suffixes of step directories set aside (renamed, never deleted) by
# Checkpointer.set_aside; Orbax ignores such names.
DAMAGED_SUFFIX = "corrupt"
DIVERGED_SUFFIX = "diverged"


class CheckpointError(errors.UserError):
  """A directory that is not a readable checkpoint or weights export, or one
  whose parameters do not fit the model its metadata names."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint step whose files cannot be read: truncated, missing or
  garbage (as a crash or a full disk may leave them), or holding non-finite
  values.

  Attributes:
    directory: The step directory.
  """

  def __init__(self, directory: str, reason: str):
    super().__init__(f"checkpoint {directory} is damaged: {reason}")
    self.directory = directory
    self.reason = reason


class SourceNotFoundError(errors.UserError, FileNotFoundError):
  """Nothing at the path given as weights or a checkpoint."""


class CheckpointSaveError(errors.UserError, OSError):
  """A checkpoint could not be written (a full disk, a lost file system);
  the earlier ones are intact."""


def one_line(error: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, shortened: library errors (Orbax,
  tensorstore) span many lines."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}".strip()
  return text if len(text) <= limit else text[:limit - 3] + "..."


class StepError(errors.UserError, argparse.ArgumentTypeError):
  """A ``--step`` that is none of :data:`STEP_RULES`. Also an
  ``ArgumentTypeError``, so that argparse prints this message rather than
  "invalid parse_step value"."""


def parse_step(value: str | int) -> str | int:
  """``"best"``, ``"latest"`` or a step number, from a flag's text.

  Raises:
    StepError: Anything else (its message lists the accepted values).
  """
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value >= 0:
      return int(value)
  else:
    text = str(value).strip().lower()
    if text in (BEST, LATEST):
      return text
    if text.isdigit():
      return int(text)
  raise StepError(f"--step must be {BEST!r} (the evaluated step with the "
                  f"highest mean IU, else the latest), {LATEST!r} or a step "
                  f"number; got {value!r}")


def is_step_dir(path: str) -> bool:
  """Whether ``path`` looks like one step of a training checkpoint."""
  return (os.path.isdir(os.path.join(path, PARAMS_ITEM))
          and os.path.isdir(os.path.join(path, METADATA_ITEM))
          and os.path.basename(os.path.normpath(path)).isdigit())
