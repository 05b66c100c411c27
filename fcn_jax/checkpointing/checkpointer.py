"""Training checkpoints: the Orbax manager of ``WORKDIR/checkpoints``.

One ``CheckpointManager`` keeps the latest ``max_to_keep`` steps and, among
the evaluated ones, the ``keep_best`` with the highest mean IU. Reads turn
the many library errors of a damaged step into one
:class:`DamagedCheckpointError` line, and :meth:`Checkpointer.set_aside`
renames such a step (``N.corrupt``, ``N.diverged``) instead of deleting it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterator, Mapping

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from fcn_jax.checkpointing.layout import (
    CHECKPOINT_DIR, DAMAGED_SUFFIX, DATA_ITER_ITEM, DEFAULT_STEP, BEST, LATEST,
    METADATA_ITEM, PARAMS_ITEM, TRAIN_STATE_ITEM, CheckpointError,
    CheckpointSaveError, DamagedCheckpointError, one_line, parse_step)
from fcn_jax.data import iterator_state

Params = dict[str, dict[str, np.ndarray]]
_STRUCTURE_MISMATCH = "tree structures do not match"


def _mean_iu(metrics: Mapping[str, Any]) -> float:
  """The ranking metric; undefined (NaN) mean IUs rank last."""
  value = float(metrics.get("mean_iu", float("nan")))
  return value if math.isfinite(value) else -math.inf


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
    self._saving: int | None = None
    self._reported: BaseException | None = None  # A save failure raised.
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _read(self, step: int, items: Mapping[str, Any]) -> Any:
    """Restores ``items`` of one step; unreadable files raise
    :class:`DamagedCheckpointError` (one line) instead of library errors."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax, tensorstore, JSON, grain: many types.
      if _STRUCTURE_MISMATCH in str(e):  # Readable, but another optimizer.
        raise CheckpointError(
            f"{self.step_directory(step)} holds a train state of another "
            f"structure than this config builds ({one_line(e, 120)}): resume "
            "with the optim settings it was trained with (the workdir's "
            "config.json), or start a new workdir with --config.init_from="
            "this workdir") from None
      raise DamagedCheckpointError(self.step_directory(step),
                                   one_line(e)) from None

  def set_aside(self, step: int, suffix: str = DAMAGED_SUFFIX) -> str:
    """Renames step ``N``'s directory to ``N.<suffix>`` (``N.<suffix>.1``, ...
    if taken), so that it is no longer a checkpoint but nothing is deleted.

    Only process 0 renames; every process then reloads its list of steps.
    Call it on every process.

    Returns:
      The new path.
    """
    source = self.step_directory(step)
    target, n = f"{source}.{suffix}", 0
    while os.path.exists(target):
      n += 1
      target = f"{source}.{suffix}.{n}"
    if jax.process_index() == 0 and os.path.exists(source):
      os.rename(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self._manager.reload()
    return target

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

  def select(self, rule: str | int = DEFAULT_STEP) -> tuple[int, str]:
    """The step a rule picks (see :data:`STEP_RULES`) and why, in words.

    Raises:
      CheckpointError: No checkpoint, or the requested step is not kept.
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint saved yet in {self.directory}")
    rule = parse_step(rule)
    if rule == LATEST:
      return steps[-1], f"the latest of {len(steps)}"
    if rule == BEST:
      evaluated = [s for s in steps if self._manager.metrics(s)]
      if not evaluated:
        return steps[-1], (f"the latest of {len(steps)}; none has been "
                           "evaluated")
      best = self.best_step()
      value = _mean_iu(self._manager.metrics(best))
      return best, (f"the best by mean IU ({100 * value:.2f}%) of "
                    f"{len(evaluated)} evaluated")
    if rule not in steps:
      raise CheckpointError(f"{self.directory} has no step {rule}; it has "
                            f"{steps}")
    return rule, "as requested"

  def save(self, step: int, state: Mapping[str, Any], *,
           metadata: Mapping[str, Any],
           data_iterator: Iterator[Any] | None = None,
           metrics: Mapping[str, Any] | None = None) -> None:
    """Saves one step (asynchronously; see :meth:`wait`).

    Args:
      step: The step number (the directory name).
      state: Host (NumPy) values ``params``, ``opt_state``, ``step``, ``rng``.
      metadata: JSON-serialisable description (:func:`make_metadata` + more).
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
    try:
      self._manager.save(step, args=ocp.args.Composite(**items),
                         metrics=metrics, force=True)
    except Exception as e:  # pylint: disable=broad-except  # Orbax, OSError.
      # Orbax raises a failed background write of the previous save here.
      raise self._save_error(self._saving or step, e) from None
    self._saving = step

  def _save_error(self, step: int, error: BaseException
                  ) -> CheckpointSaveError:
    self._saving = None
    try:
      self._manager.reload()
      kept = [s for s in self._manager.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      kept = []
    logging.debug("The save of step %d failed:", step,
                  exc_info=(type(error), error, error.__traceback__))
    resume = (f"the earlier checkpoints are intact (steps "
              f"{', '.join(map(str, kept))}): free space or fix the file "
              "system, then rerun the same command to resume from step "
              f"{kept[-1]}" if kept else "no earlier checkpoint was saved: "
              "free space or fix the file system, then rerun")
    self._reported = CheckpointSaveError(
        f"could not save the checkpoint of step {step} in {self.directory} "
        f"({_save_failure_reason(error)}); {resume}")
    return self._reported

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
    iterator_state = None
    if data_iterator is not None:
      iterator_state = self._iterator_state(step)
      if iterator_state is None:  # Saved by this process count.
        items[DATA_ITER_ITEM] = grain.checkpoint.CheckpointRestore(
            data_iterator)
    restored = self._read(step, items)
    if iterator_state is not None:
      try:
        data_iterator.set_state(iterator_state)
      except Exception as e:  # pylint: disable=broad-except  # grain's types.
        raise CheckpointError(
            f"{self.step_directory(step)}: the data iterator position saved "
            f"by another process count does not fit this input pipeline "
            f"({one_line(e, 150)}); resume with the config it was trained "
            "with (config.input.num_workers included)") from None
    state = {PARAMS_ITEM: restored[PARAMS_ITEM], **restored[TRAIN_STATE_ITEM]}
    state = jax.tree_util.tree_map(np.asarray, state)
    # Orbax restores the shapes on disk whatever the template says.
    shapes = jax.tree_util.tree_map(np.shape, state)
    expected = jax.tree_util.tree_map(np.shape, template)
    if shapes != expected:
      raise CheckpointError(
          f"{self.step_directory(step)} holds arrays of other shapes than "
          "this config's model and optimizer: resume with the config it was "
          "trained with (the workdir's config.json), or start a new workdir "
          "with --config.init_from=this workdir")
    return state, _metadata_dict(restored[METADATA_ITEM],
                                 self.step_directory(step))

  def _iterator_state(self, step: int) -> dict[str, Any] | None:
    """The data iterator state to set when the step was saved by another
    process count (None: this count saved it; grain restores it); see
    :mod:`fcn_jax.data.iterator_state`."""
    where = self.step_directory(step)
    try:
      return iterator_state.position_for(
          os.path.join(where, DATA_ITER_ITEM), jax.process_index(),
          jax.process_count())
    except iterator_state.MissingPositionError as e:
      raise DamagedCheckpointError(where, str(e)) from None
    except iterator_state.DisagreeingPositionsError as e:
      raise CheckpointError(f"{where} {e}") from None

  def read_metadata(self, step: int) -> dict[str, Any]:
    """The metadata JSON of one step.

    Raises:
      DamagedCheckpointError: It cannot be read or is not a JSON object.
    """
    restored = self._read(step, {METADATA_ITEM: ocp.args.JsonRestore()})
    return _metadata_dict(restored[METADATA_ITEM], self.step_directory(step))

  def restore_params(self, step: int) -> tuple[Params, dict[str, Any]]:
    """Restores only the parameters and metadata of one step.

    Raises:
      DamagedCheckpointError: They cannot be read.
    """
    restored = self._read(step, {PARAMS_ITEM: ocp.args.StandardRestore(),
                                 METADATA_ITEM: ocp.args.JsonRestore()})
    params = jax.tree_util.tree_map(np.asarray, restored[PARAMS_ITEM])
    return params, _metadata_dict(restored[METADATA_ITEM],
                                  self.step_directory(step))

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk.

    Raises:
      CheckpointSaveError: The last save failed (one line; the earlier
        checkpoints are intact).
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # Orbax, OSError.
      if self._saving is None:
        if self._reported is not None:  # The same failure, raised already.
          logging.debug("After the failed save: %s", one_line(e))
          return
        raise
      raise self._save_error(self._saving, e) from None
    self._saving = None

  def close(self) -> None:
    self._manager.close()


def _save_failure_reason(error: BaseException) -> str:
  """What made a save fail, in words: the OS error's own text (e.g. "No space
  left on device") however it reached us, else the library's first line.

  Which write meets a full disk first (a tensorstore array, Orbax's JSON, the
  data iterator's state) varies from run to run; the user's line should not.
  """
  chain, cause = [], error  # An OSError raised as is or wrapped by Orbax.
  while cause is not None and cause not in chain:
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
    chain.append(cause)
    cause = cause.__cause__ or cause.__context__
  # tensorstore's messages end with the OS error after a long path.
  os_error = re.search(r"([A-Z][^:\[]*) \[os_error_code='\d+'\]", str(error))
  return os_error[1] if os_error else one_line(error, 200)


def _metadata_dict(value: Any, directory: str) -> dict[str, Any]:
  if not isinstance(value, Mapping):
    raise DamagedCheckpointError(directory, "its metadata is not a JSON "
                                 "object")
  return dict(value)


def non_finite_leaves(tree: Any) -> list[str]:
  """The paths of the floating-point arrays of ``tree`` (host or device
  values) holding a NaN or an infinity."""
  bad = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.inexact) and not np.all(
        np.isfinite(leaf)):
      bad.append(jax.tree_util.keystr(path))
  return bad


