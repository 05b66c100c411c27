"""Training checkpoints (Orbax) and loading any saved model for inference.

Layout of a training workdir::

  WORKDIR/checkpoints/<step>/
    params/       Orbax PyTree: the model parameters (Caffe layer names)
    train_state/  Orbax PyTree: {"opt_state", "step", "rng"}
    data_iter/    grain iterator state, process_<i>-of-<n>.json
    metadata/     JSON: model, num_classes, model_options, preprocessing,
                  source, step, config (and metrics when evaluated)
    metrics/      JSON: the evaluation metrics of this step, if any

One ``CheckpointManager`` keeps the latest ``max_to_keep`` steps and, among
the evaluated ones, the ``keep_best`` with the highest mean IU.

:func:`load_inference_bundle` opens a training workdir (its best checkpoint by
mean IU, else its latest), one checkpoint step directory, or a weights-export
directory (``params/`` + ``fcn_jax_weights.json``, see :mod:`fcn_jax.weights`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterator, Mapping

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from fcn_jax import models
from fcn_jax import preprocessing as preprocessing_lib
from fcn_jax import weights

CHECKPOINT_DIR = "checkpoints"
PARAMS_ITEM = "params"
TRAIN_STATE_ITEM = "train_state"
DATA_ITER_ITEM = "data_iter"
METADATA_ITEM = "metadata"


def _mean_iu(metrics: Mapping[str, Any]) -> float:
  """The ranking metric; undefined (NaN) mean IUs rank last."""
  value = float(metrics.get("mean_iu", float("nan")))
  return value if math.isfinite(value) else -math.inf


def model_metadata(model_config: ml_collections.ConfigDict,
                   preprocessing: preprocessing_lib.Preprocessing
                   ) -> dict[str, Any]:
  """The description of a model that travels with its parameters.

  The same keys as a weights export's ``fcn_jax_weights.json``
  (:func:`fcn_jax.weights.make_metadata`).
  """
  return weights.make_metadata(
      model_config.name, model_config.num_classes,
      {"width_divisor": int(model_config.width_divisor),
       "learn_upsampling": bool(model_config.learn_upsampling),
       "dropout_rate": float(model_config.dropout_rate),
       "upsample_mode": str(model_config.get("upsample_mode", "dense"))},
      preprocessing, source={"format": "fcn_jax training checkpoint"})


class Checkpointer:
  """Saves and restores training checkpoints under ``WORKDIR/checkpoints``.

  Args:
    workdir: The training workdir.
    max_to_keep: How many of the latest checkpoints to keep.
    keep_best: How many of the best checkpoints by mean IU to keep as well.
    read_only: Open existing checkpoints without saving or deleting.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 2,
               keep_best: int = 1, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    policies = [checkpoint_managers.LatestN(n=max(1, max_to_keep))]
    if keep_best > 0:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=_mean_iu, n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(
            policies),
        # best_fn makes the manager record each step's metrics on disk, so
        # best_step() survives restarts.
        best_fn=_mean_iu, best_mode="max",
        create=not read_only, read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The evaluated step with the highest mean IU, else the latest."""
    evaluated = [s for s in self.all_steps() if self._manager.metrics(s)]
    if not evaluated:
      return self.latest_step()
    return max(evaluated, key=lambda s: _mean_iu(self._manager.metrics(s)))

  def metrics(self, step: int) -> dict[str, Any] | None:
    return self._manager.metrics(step)

  def save(self, step: int, state: Mapping[str, Any], *,
           metadata: Mapping[str, Any],
           data_iterator: Iterator[Any] | None = None,
           metrics: Mapping[str, Any] | None = None) -> None:
    """Saves one step (asynchronously; see :meth:`wait`).

    Args:
      step: The step number (the directory name).
      state: Host (NumPy) values ``params``, ``opt_state``, ``step``, ``rng``.
      metadata: JSON-serialisable description (:func:`model_metadata` + more).
      data_iterator: A grain iterator whose position is saved.
      metrics: Evaluation metrics of this step (ranks it for ``keep_best``);
        only JSON-able scalar values are kept.
    """
    state = jax.tree_util.tree_map(np.asarray, dict(state))
    items = {
        PARAMS_ITEM: ocp.args.StandardSave(state["params"]),
        TRAIN_STATE_ITEM: ocp.args.StandardSave(
            {k: state[k] for k in ("opt_state", "step", "rng")}),
        METADATA_ITEM: ocp.args.JsonSave(dict(metadata)),
    }
    if data_iterator is not None:
      items[DATA_ITER_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float, np.number))}
    self._manager.save(step, args=ocp.args.Composite(**items),
                       metrics=metrics, force=True)

  def restore(self, step: int, state_template: Mapping[str, Any], *,
              data_iterator: Iterator[Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores a training state (and the data iterator's position, in place).

    Args:
      step: The step to restore.
      state_template: Host values with the structure of the saved state.
      data_iterator: The grain iterator to move to the saved position.

    Returns:
      ``(state, metadata)`` with ``state`` holding ``params``, ``opt_state``,
      ``step`` and ``rng`` as NumPy arrays.
    """
    template = jax.tree_util.tree_map(np.asarray, dict(state_template))
    items = {
        PARAMS_ITEM: ocp.args.StandardRestore(template["params"]),
        TRAIN_STATE_ITEM: ocp.args.StandardRestore(
            {k: template[k] for k in ("opt_state", "step", "rng")}),
        METADATA_ITEM: ocp.args.JsonRestore(),
    }
    if data_iterator is not None:
      if not os.path.isdir(os.path.join(self.directory, str(step),
                                        DATA_ITER_ITEM)):
        raise ValueError(
            f"checkpoint {self.directory}/{step} has no data iterator state; "
            f"it cannot be resumed exactly")
      items[DATA_ITER_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    state = {PARAMS_ITEM: restored[PARAMS_ITEM], **restored[TRAIN_STATE_ITEM]}
    return state, dict(restored[METADATA_ITEM])

  def read_metadata(self, step: int) -> dict[str, Any]:
    """The metadata JSON of one step."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))
    return dict(restored[METADATA_ITEM])

  def restore_params(self, step: int) -> tuple[Any, dict[str, Any]]:
    """Restores only the parameters and metadata of one step."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        PARAMS_ITEM: ocp.args.StandardRestore(),
        METADATA_ITEM: ocp.args.JsonRestore(),
    }))
    params = jax.tree_util.tree_map(np.asarray, restored[PARAMS_ITEM])
    return params, dict(restored[METADATA_ITEM])

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _is_step_dir(path: str) -> bool:
  return (os.path.isdir(os.path.join(path, PARAMS_ITEM))
          and os.path.isdir(os.path.join(path, METADATA_ITEM))
          and os.path.basename(os.path.normpath(path)).isdigit())


def existing_source(path: str) -> str:
  """The absolute ``path`` of weights or a checkpoint, which must exist.

  Raises:
    FileNotFoundError: Nothing is there; the message says how to make it.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no such weights or checkpoint: {path} (convert pretrained files "
        "with python -m fcn_jax.convert, see the README's 'Pretrained "
        "weights', or give a training workdir)")
  return path


def load_params(path: str) -> tuple[Any, dict[str, Any]]:
  """Loads parameters and their metadata from any saved model.

  Args:
    path: A weights-export directory, a training workdir (its best checkpoint
      by mean IU, else the latest), its ``checkpoints`` directory, or one
      checkpoint step directory.

  Returns:
    ``(params, metadata)``; params as NumPy arrays keyed by layer name;
    metadata with at least ``model``, ``num_classes``, ``model_options`` and
    ``preprocessing``.
  """
  path = existing_source(path)
  if weights.is_params_checkpoint(path):
    return weights.load_params(path)
  if _is_step_dir(path):
    checkpoints_dir, step = os.path.split(os.path.normpath(path))
    step = int(step)
  else:
    checkpoints_dir = path
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
      checkpoints_dir = os.path.join(path, CHECKPOINT_DIR)
    step = None
  if os.path.basename(checkpoints_dir) != CHECKPOINT_DIR:
    raise ValueError(
        f"{path} is neither a weights export (no "
        f"{weights.METADATA_FILENAME}), a "
        f"training workdir (no {CHECKPOINT_DIR}/) nor a checkpoint step "
        f"directory")
  checkpointer = Checkpointer(os.path.dirname(checkpoints_dir),
                              read_only=True)
  try:
    if step is None:
      step = checkpointer.best_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint saved yet in {checkpoints_dir}")
    params, metadata = checkpointer.restore_params(step)
  finally:
    checkpointer.close()
  metadata["source"] = {**(metadata.get("source") or {}),
                        "checkpoint": f"{checkpoints_dir}/{step}"}
  logging.info("Loaded parameters of step %d from %s", step, checkpoints_dir)
  return params, metadata


def load_inference_bundle(path: str) -> tuple[
    models.FCN, dict[str, Any], preprocessing_lib.Preprocessing,
    dict[str, Any]]:
  """Loads everything needed to run a saved model.

  Args:
    path: See :func:`load_params`.

  Returns:
    ``(model, variables, preprocessing, metadata)``: the model rebuilt from
    the metadata, ``{"params": params}`` ready for ``model.apply``, the input
    preprocessing the weights expect, and the metadata.
  """
  params, metadata = load_params(path)
  model = weights.model_from_metadata(metadata)
  if "preprocessing" not in metadata:
    raise ValueError(f"{path}: metadata does not record the preprocessing")
  preprocessing = preprocessing_lib.Preprocessing.from_dict(
      metadata["preprocessing"])
  return model, {"params": params}, preprocessing, metadata


def write_json(path: str, content: Mapping[str, Any]) -> None:
  """Writes a JSON file atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(content, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
