"""Everything fcn_jax keeps on disk, by role; ``from fcn_jax import
checkpointing`` gives the names every command uses.

Two on-disk formats share one metadata (:mod:`.metadata`,
:func:`make_metadata`): the :class:`fcn_jax.models.ModelSpec` fields that
shape the parameters, the class names, the preprocessing the weights expect,
and where they came from.

* A **training workdir** (written by :mod:`fcn_jax.training.loop`;
  :mod:`.checkpointer`)::

    WORKDIR/checkpoints/<step>/
      params/       Orbax PyTree: the model parameters (Caffe layer names)
      train_state/  Orbax PyTree: {"opt_state", "step", "rng"}
      data_iter/    grain iterator state, process_<i>-of-<n>.json
                    (fcn_jax.data.iterator_state)
      metadata/     JSON: the metadata, plus step and config
      metrics/      JSON: the evaluation metrics of this step, if any
    WORKDIR/workdir.lock  while a run writes the workdir
                          (fcn_jax.training.workdir_lock)

* A **weights export** (written by ``python -m fcn_jax.convert``;
  :mod:`.weights_export`)::

    DIR/params/               Orbax PyTree: the parameters
    DIR/fcn_jax_weights.json  the metadata, plus the source file, its SHA-256
                              and the load report

:func:`load` (:mod:`.loader`) opens either (a workdir, its ``checkpoints``
directory, one step directory, or a weights export) and picks the step with
one rule for every command (:data:`STEP_RULES`, :mod:`.layout`): ``best``
(the default: the evaluated step with the highest mean IU, else the
latest), ``latest``, or a step number.

Modules: :mod:`.layout` (names on disk, the step rule, the errors),
:mod:`.metadata`, :mod:`.checkpointer` (Orbax, damage set-aside),
:mod:`.weights_export`, :mod:`.loader`. The workdir lock lives with the
training workdir (:mod:`fcn_jax.training.workdir_lock`) and is re-exported
here for older callers.
"""

from __future__ import annotations

from fcn_jax.checkpointing.checkpointer import Checkpointer
from fcn_jax.checkpointing.checkpointer import non_finite_leaves
from fcn_jax.checkpointing.layout import BEST
from fcn_jax.checkpointing.layout import CHECKPOINT_DIR
from fcn_jax.checkpointing.layout import CheckpointError
from fcn_jax.checkpointing.layout import CheckpointSaveError
from fcn_jax.checkpointing.layout import DAMAGED_SUFFIX
from fcn_jax.checkpointing.layout import DamagedCheckpointError
from fcn_jax.checkpointing.layout import DATA_ITER_ITEM
from fcn_jax.checkpointing.layout import DEFAULT_STEP
from fcn_jax.checkpointing.layout import DIVERGED_SUFFIX
from fcn_jax.checkpointing.layout import FORMAT_VERSION
from fcn_jax.checkpointing.layout import LATEST
from fcn_jax.checkpointing.layout import METADATA_ITEM
from fcn_jax.checkpointing.layout import PARAMS_ITEM
from fcn_jax.checkpointing.layout import parse_step
from fcn_jax.checkpointing.layout import SourceNotFoundError
from fcn_jax.checkpointing.layout import STEP_RULES
from fcn_jax.checkpointing.layout import StepError
from fcn_jax.checkpointing.layout import TRAIN_STATE_ITEM
from fcn_jax.checkpointing.layout import WEIGHTS_METADATA_FILE
from fcn_jax.checkpointing.loader import existing_source
from fcn_jax.checkpointing.loader import load
from fcn_jax.checkpointing.loader import LoadedModel
from fcn_jax.checkpointing.metadata import class_names
from fcn_jax.checkpointing.metadata import make_metadata
from fcn_jax.checkpointing.metadata import model_spec
from fcn_jax.checkpointing.weights_export import is_weights_export
from fcn_jax.checkpointing.weights_export import load_metadata
from fcn_jax.checkpointing.weights_export import save_weights
from fcn_jax.logging_utils import write_json
from fcn_jax.training.workdir_lock import LOCK_FILE
from fcn_jax.training.workdir_lock import LOCK_HEARTBEAT_S
from fcn_jax.training.workdir_lock import LOCK_STALE_AFTER_S
from fcn_jax.training.workdir_lock import WorkdirLock
from fcn_jax.training.workdir_lock import WorkdirLockedError

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "Checkpointer",
    "CheckpointError",
    "CheckpointSaveError",
    "class_names",
    "DAMAGED_SUFFIX",
    "DamagedCheckpointError",
    "DATA_ITER_ITEM",
    "DEFAULT_STEP",
    "DIVERGED_SUFFIX",
    "existing_source",
    "FORMAT_VERSION",
    "is_weights_export",
    "LATEST",
    "load",
    "load_metadata",
    "LoadedModel",
    "LOCK_FILE",
    "LOCK_HEARTBEAT_S",
    "LOCK_STALE_AFTER_S",
    "make_metadata",
    "METADATA_ITEM",
    "model_spec",
    "non_finite_leaves",
    "PARAMS_ITEM",
    "parse_step",
    "save_weights",
    "SourceNotFoundError",
    "STEP_RULES",
    "StepError",
    "TRAIN_STATE_ITEM",
    "WEIGHTS_METADATA_FILE",
    "WorkdirLock",
    "WorkdirLockedError",
    "write_json",
]
