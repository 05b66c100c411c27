"""Everything fcn_jax keeps on disk: training checkpoints, weights exports and
the metadata that travels with both; and the one loader for all of them.

Two on-disk formats share one metadata (:func:`make_metadata`): the
:class:`fcn_jax.models.ModelSpec` fields that shape the parameters, the class
names, the preprocessing the weights expect, and where they came from.

* A **training workdir** (written by :mod:`fcn_jax.training.loop`)::

    WORKDIR/checkpoints/<step>/
      params/       Orbax PyTree: the model parameters (Caffe layer names)
      train_state/  Orbax PyTree: {"opt_state", "step", "rng"}
      data_iter/    grain iterator state, process_<i>-of-<n>.json
      metadata/     JSON: the metadata, plus step and config
      metrics/      JSON: the evaluation metrics of this step, if any
    WORKDIR/workdir.lock  while a run writes the workdir (:class:`WorkdirLock`)

  One ``CheckpointManager`` keeps the latest ``max_to_keep`` steps and, among
  the evaluated ones, the ``keep_best`` with the highest mean IU.
* A **weights export** (written by ``python -m fcn_jax.convert``)::

    DIR/params/               Orbax PyTree: the parameters
    DIR/fcn_jax_weights.json  the metadata, plus the source file, its SHA-256
                              and the load report

:func:`load` opens either (a workdir, its ``checkpoints`` directory, one step
directory, or a weights export) and picks the step with one rule for every
command (:data:`STEP_RULES`): ``best`` (the default: the evaluated step with
the highest mean IU, else the latest), ``latest``, or a step number.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from typing import Any, Iterator, Mapping, Sequence

import logging as logging_lib

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from fcn_jax import logging_utils
from fcn_jax import models
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax import voc

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

Params = dict[str, dict[str, np.ndarray]]


class CheckpointError(ValueError):
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


# Suffixes of step directories set aside (renamed, never deleted) by
# Checkpointer.set_aside; Orbax ignores such names.
DAMAGED_SUFFIX = "corrupt"
DIVERGED_SUFFIX = "diverged"
_STRUCTURE_MISMATCH = "tree structures do not match"


def _one_line(error: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, shortened: library errors (Orbax,
  tensorstore) span many lines."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}".strip()
  return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------
# Metadata.
# --------------------------------------------------------------------------


def make_metadata(spec: models.ModelSpec,
                  preprocessing: preprocessing_lib.Preprocessing, *,
                  class_names: Sequence[str] | Mapping[str, Sequence[str]]
                  | None = None,
                  source: Mapping[str, Any] | None = None,
                  **extra: Any) -> dict[str, Any]:
  """The description that travels with a model's parameters.

  Args:
    spec: The model. Its name, class count and :meth:`ModelSpec.shape_options`
      are recorded (the compute dtype is not: it does not shape parameters).
    preprocessing: What inputs the weights expect (the colour image's; the
      HHA and depth preparations of NYUD's nets are recorded under
      ``source_preprocessing``).
    class_names: The classes' names (default: VOC's for 21 classes, else
      ``class_<i>``); for a multi-head net a dict of them keyed by head, as
      recorded.
    source: Where the parameters came from (e.g. ``{'file', 'format',
      'sha256'}`` of a converted file).
    **extra: More JSON-able entries (``report``, ``step``, ``config``, ...).

  Returns:
    A JSON-serialisable dict; :func:`model_spec` reads it back.
  """
  if spec.multi_head:
    given = dict(class_names or {})
    unknown = sorted(set(given) - set(spec.head_classes))
    if unknown:
      raise ValueError(f"class names for {unknown}, which {spec.name} does "
                       f"not have (heads: {sorted(spec.head_classes)})")
    names = {h: list(given.get(h) or voc.class_names(c))
             for h, c in spec.head_classes.items()}
  else:
    names = {models.SINGLE_OUTPUT: list(class_names) if class_names
             else voc.class_names(spec.num_classes)}
  for head, head_names in names.items():
    wanted = spec.head_classes[head]
    if len(head_names) != wanted:
      raise ValueError(f"{len(head_names)} class names for a model of "
                       f"{wanted} classes"
                       + (f" in its {head} head" if spec.multi_head else ""))
  if not spec.multi_head:
    names = names[models.SINGLE_OUTPUT]
  return {
      "format_version": FORMAT_VERSION,
      "model": spec.name,
      "num_classes": int(spec.num_classes),
      "model_options": spec.shape_options(),
      "class_names": names,
      "preprocessing": preprocessing.to_dict(),
      **({"source_preprocessing": extra_sources} if (
          extra_sources := preprocessing_lib.source_preprocessing_metadata(
              [f for fs in spec.input_sources.values() for f in fs]))
         else {}),
      "source": dict(source or {}),
      **extra,
  }


def model_spec(metadata: Mapping[str, Any], **overrides: Any
               ) -> models.ModelSpec:
  """The :class:`~fcn_jax.models.ModelSpec` recorded in ``metadata``.

  Args:
    metadata: From :func:`make_metadata`.
    **overrides: Compute options to change (e.g. ``dtype``).
  """
  return models.ModelSpec.from_dict(
      metadata.get("model_options", {}), name=metadata["model"],
      num_classes=metadata["num_classes"], **overrides)


def class_names(metadata: Mapping[str, Any]
                ) -> list[str] | dict[str, list[str]]:
  """The class names recorded in ``metadata`` (older files: the VOC rule);
  a dict of them keyed by head for a multi-head net."""
  names = metadata.get("class_names")
  if isinstance(names, Mapping):
    return {head: list(v) for head, v in names.items()}
  return list(names or voc.class_names(int(metadata["num_classes"])))


def write_json(path: str, content: Mapping[str, Any]) -> None:
  """Writes strict JSON (NaN as null) atomically, on process 0 only."""
  if jax.process_index() != 0:
    return
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with open(tmp, "w") as f:
    json.dump(logging_utils.to_json(dict(content)), f, indent=2,
              sort_keys=True, default=str)
  os.replace(tmp, path)


# --------------------------------------------------------------------------
# One writer per workdir.
# --------------------------------------------------------------------------

LOCK_FILE = "workdir.lock"
# A lock of another host is stale once its holder has not refreshed it for
# this long (the holder touches it every LOCK_HEARTBEAT_S seconds).
LOCK_HEARTBEAT_S = 60.0
LOCK_STALE_AFTER_S = 10 * 60.0


class WorkdirLockedError(OSError):
  """Another run (alive, or of another host and recently refreshed) holds
  the workdir."""


def _process_start_ticks(pid: int) -> int | None:
  """The start time of process ``pid`` in clock ticks since boot (Linux's
  /proc), which tells a live holder from a new process that reuses its
  PID; None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_alive(pid: int, start_ticks: int | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Alive, another user's.
  if start_ticks is not None:
    now = _process_start_ticks(pid)
    if now is not None and now != start_ticks:
      return False  # The PID was reused by another process.
  return True


def _describe_holder(holder: Mapping[str, Any]) -> str:
  return (f"{holder.get('command', '?')} (PID {holder.get('pid', '?')} on "
          f"host {holder.get('host', '?')}, since {holder.get('since', '?')})")


class WorkdirLock:
  """One writer per workdir: the lock file ``WORKDIR/workdir.lock``.

  The lock is a JSON file created with ``O_EXCL`` naming its holder: the
  command, host, PID (and its start time, to see PID reuse) and since when.
  A second run on the workdir is refused (:class:`WorkdirLockedError`)
  before it writes anything. A lock left by a run that died (SIGKILL, a
  crash, a lost machine) is *stale* and taken over with a warning:

  * same host: its process no longer exists (or its PID now belongs to a
    process started later);
  * another host: it cannot be asked, so the holder refreshes the file's
    modification time every :data:`LOCK_HEARTBEAT_S` seconds and a lock not
    refreshed for :data:`LOCK_STALE_AFTER_S` seconds is stale (a run whose
    file system stalls that long loses its lock).

  On a multi-process run process 0 takes the lock for the whole run and the
  others follow its verdict (a broadcast), so all processes start or all
  refuse; they write only what process 0 coordinates. The lock is released
  (the file removed, if it is still ours) by :meth:`release`, which the
  training calls on every exit path; a SIGKILL leaves a stale lock, taken
  over by the next run.

  Args:
    workdir: The workdir (created if missing).
    command: What holds it, for the message another run prints.
  """

  def __init__(self, workdir: str, command: str | None = None):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._command = command or " ".join(sys.argv[:1]) or "python"
    self._token = uuid.uuid4().hex
    self._held = False
    self._stop = threading.Event()
    self._heartbeat = None

  def _content(self) -> dict[str, Any]:
    return {"command": self._command, "host": socket.gethostname(),
            "pid": os.getpid(), "pid_start": _process_start_ticks(os.getpid()),
            "processes": jax.process_count(), "token": self._token,
            "since": datetime.datetime.now().astimezone().isoformat(
                timespec="seconds")}

  def _read_holder(self) -> dict[str, Any] | None:
    """The current holder, ``{}`` for an unreadable file (one being written
    or garbage), None when there is no lock."""
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def _stale(self, holder: Mapping[str, Any]) -> str | None:
    """Why the lock of ``holder`` is stale, or None if it is held."""
    try:
      age = time.time() - os.path.getmtime(self.path)
    except OSError:
      return "it was just released"
    if holder.get("host") == socket.gethostname() and isinstance(
        holder.get("pid"), int):
      if not _pid_alive(holder["pid"], holder.get("pid_start")):
        return f"process {holder['pid']} no longer runs"
      return None
    if age > LOCK_STALE_AFTER_S:
      return (f"it was last refreshed {age / 60:.0f} min ago (a live holder "
              f"refreshes it every {LOCK_HEARTBEAT_S:.0f} s)")
    return None

  def _try_create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(self._content(), f, indent=2)
    return True

  def _acquire_here(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    for _ in range(5):
      if self._try_create():
        return
      holder = self._read_holder()
      if holder is None:
        continue  # Released meanwhile: try again.
      reason = self._stale(holder) if holder else None
      if reason is None:
        if not holder:  # Being written by another run right now.
          time.sleep(0.2)
          holder = self._read_holder() or {}
        raise WorkdirLockedError(
            f"the workdir {os.path.dirname(self.path)} is in use by "
            f"{_describe_holder(holder)}; one run writes a workdir at a "
            "time: wait for it to end, or give another --workdir (if that "
            f"run is dead on another host, delete {self.path})")
      # Stale: move it aside atomically, so that of two runs taking it over
      # at once only one succeeds (the other's rename fails).
      aside = f"{self.path}.stale-{self._token}"
      try:
        os.rename(self.path, aside)
      except FileNotFoundError:
        continue
      os.remove(aside)
      logging.warning("Took over the stale lock %s of %s: %s.", self.path,
                      _describe_holder(holder), reason)
    raise WorkdirLockedError(f"cannot take the lock {self.path}: other runs "
                             "keep taking it; one run per workdir")

  def acquire(self) -> "WorkdirLock":
    """Takes the lock (process 0; the others follow its verdict).

    Raises:
      WorkdirLockedError: Another run holds it (on every process).
    """
    error = None
    if jax.process_index() == 0:
      try:
        self._acquire_here()
        self._held = True
      except WorkdirLockedError as e:
        error = e
    if jax.process_count() > 1:
      from fcn_jax import parallel  # pylint: disable=g-import-not-at-top
      ok = parallel.all_processes(error is None)
      if not ok and error is None:
        self.release()
        error = WorkdirLockedError(
            f"process 0 could not take the lock {self.path} (its log says "
            "which run holds the workdir)")
    if error is not None:
      raise error
    if self._held:
      self._heartbeat = threading.Thread(target=self._refresh, daemon=True,
                                         name="workdir-lock-heartbeat")
      self._heartbeat.start()
    return self

  def _refresh(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    """Removes the lock file if this run still holds it. Idempotent."""
    self._stop.set()
    if not self._held:
      return
    self._held = False
    holder = self._read_holder()
    if holder and holder.get("token") == self._token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc_info: Any) -> None:
    self.release()


# --------------------------------------------------------------------------
# Training checkpoints.
# --------------------------------------------------------------------------


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (a full disk, a lost file system);
  the earlier ones are intact."""


_EVENT_LOOP_CLOSED = "Event loop is closed"
_quiet_installed = False


class _OrbaxThreadErrors(logging_lib.Filter):
  """Keeps Orbax's background-thread error reports (each with a traceback)
  out of the console: the same error reaches the main thread, which
  reports it in one line. With ``--verbosity=1`` (debug) they are kept, as
  debug records."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    if (record.levelno >= logging_lib.ERROR and record.exc_info
        and f"{os.sep}orbax{os.sep}" in record.pathname):
      if not logging_lib.getLogger("absl").isEnabledFor(logging_lib.DEBUG):
        return False
      record.levelno, record.levelname = logging_lib.DEBUG, "DEBUG"
    return True


def _quiet_async_errors() -> None:
  """Keeps the after-effects of a failed asynchronous read or write out of
  the console (once per process); they go to the debug log.

  * When one tensorstore read or write of an Orbax operation fails, Orbax's
    event loop ends (and closes) while the other reads of that operation
    are still in flight; as each completes, tensorstore calls the closed
    loop and Python prints "RuntimeError: Event loop is closed" as an
    unraisable exception, once per array. Nothing is lost by then: the
    failure itself was raised (and is reported in one line).
  * Orbax's save threads log each failure with its traceback before the
    main thread raises it (:class:`_OrbaxThreadErrors`).
  """
  global _quiet_installed
  if _quiet_installed:
    return
  _quiet_installed = True
  previous = sys.unraisablehook

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == _EVENT_LOOP_CLOSED):
      logging.debug("A late tensorstore callback found its event loop "
                    "closed (after a failed checkpoint read or write).",
                    exc_info=(unraisable.exc_type, unraisable.exc_value,
                              unraisable.exc_traceback))
      return
    previous(unraisable)

  sys.unraisablehook = hook
  logging_lib.getLogger("absl").addFilter(_OrbaxThreadErrors())


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
    _quiet_async_errors()
    self._saving: int | None = None
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
            f"structure than this config builds ({_one_line(e, 120)}): resume "
            "with the optim settings it was trained with (the workdir's "
            "config.json), or start a new workdir with --config.init_from="
            "this workdir") from None
      raise DamagedCheckpointError(self.step_directory(step),
                                   _one_line(e)) from None

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
    # tensorstore's messages end with the OS error after a long path.
    os_error = re.search(r"([A-Z][^:\[]*) \[os_error_code='\d+'\]",
                         str(error))
    return CheckpointSaveError(
        f"could not save the checkpoint of step {step} in {self.directory} "
        f"({os_error[1] if os_error else _one_line(error, 200)}); {resume}")

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
            f"({_one_line(e, 150)}); resume with the config it was trained "
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
    process count (None: this count saved it; grain restores it).

    Each process saves its iterator's state as
    ``data_iter/process_<k>-of-<n>.json``. The state counts *global*
    batches (host ``k`` takes its part of every global batch of one global
    sequence, :class:`fcn_jax.data.sampling.HostSlice`, before batching), so
    the ``n`` states of one step are equal and any new host, whatever the
    new count, continues from that same position with its own slice.

    Raises:
      DamagedCheckpointError: No ``data_iter/`` files, an incomplete set, or
        unreadable ones.
      CheckpointError: Readable states that disagree (not a position this
        code can continue from).
    """
    where = self.step_directory(step)
    folder = os.path.join(where, DATA_ITER_ITEM)
    index, count = jax.process_index(), jax.process_count()
    if os.path.isfile(os.path.join(folder,
                                   f"process_{index}-of-{count}.json")):
      return None
    names = os.listdir(folder) if os.path.isdir(folder) else []
    saved: dict[int, set[int]] = {}
    for name in names:
      match = re.fullmatch(r"process_(\d+)-of-(\d+)\.json", name)
      if match:
        saved.setdefault(int(match[2]), set()).add(int(match[1]))
    if not saved:
      raise DamagedCheckpointError(
          where, f"it has no {DATA_ITER_ITEM}/ files (the data iterator's "
          "position), so it cannot be resumed exactly")
    complete = [n for n, ks in saved.items() if ks == set(range(n))]
    if not complete:
      n = max(saved)
      raise DamagedCheckpointError(
          where, f"its {DATA_ITER_ITEM}/ holds the positions of processes "
          f"{sorted(saved[n])} of {n}, not all of them")
    saved_count = max(complete)
    states = []
    for k in range(saved_count):
      path = os.path.join(folder, f"process_{k}-of-{saved_count}.json")
      try:
        with open(path) as f:
          states.append(json.load(f))
      except (OSError, ValueError) as e:
        raise DamagedCheckpointError(where, f"{path}: {_one_line(e)}") from None
    if any(state != states[0] for state in states[1:]):
      raise CheckpointError(
          f"{where} was saved by {saved_count} processes at different data "
          f"positions ({', '.join(json.dumps(s) for s in states[:3])}); it "
          f"can be resumed only with {saved_count} processes, as it was "
          "saved")
    logging.info("%s was saved by %d processes; resuming on %d from the "
                 "same global data position %s.", where, saved_count, count,
                 json.dumps(states[0]))
    return states[0]

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
        raise
      raise self._save_error(self._saving, e) from None
    self._saving = None

  def close(self) -> None:
    self._manager.close()


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


def parse_step(value: str | int) -> str | int:
  """``"best"``, ``"latest"`` or a step number, from a flag's text.

  Raises:
    ValueError: Anything else.
  """
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return int(value)
  text = str(value).strip().lower()
  if text in (BEST, LATEST):
    return text
  if text.isdigit():
    return int(text)
  raise ValueError(f"--step must be one of {', '.join(STEP_RULES)}; got "
                   f"{value!r}")


# --------------------------------------------------------------------------
# Weights exports.
# --------------------------------------------------------------------------


def is_weights_export(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, WEIGHTS_METADATA_FILE))


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
      {**metadata, "format_version": FORMAT_VERSION}), indent=2)
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
      checkpointer.save(os.path.join(tmp, PARAMS_ITEM), host)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, WEIGHTS_METADATA_FILE), "w") as f:
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
  path = os.path.join(directory, WEIGHTS_METADATA_FILE)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such directory (expected a "
                          "weights export written by python -m "
                          "fcn_jax.convert).")
  if not os.path.isfile(path):
    raise CheckpointError(
        f"{directory} is not an fcn_jax weights export: it has no "
        f"{WEIGHTS_METADATA_FILE}. Convert weight files with python -m "
        "fcn_jax.convert, or give a training workdir.")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: unreadable metadata ({e}).") from None
  if not isinstance(metadata, dict):
    raise CheckpointError(f"{path}: the metadata is not a JSON object.")
  version = metadata.get("format_version")
  if version != FORMAT_VERSION:
    raise CheckpointError(f"{path}: format_version {version!r}; this fcn_jax "
                          f"reads version {FORMAT_VERSION}.")
  for key in ("model", "num_classes", "preprocessing"):
    if key not in metadata:
      raise CheckpointError(f"{path}: metadata lacks {key!r}.")
  return metadata


def _read_weights_export(directory: str) -> tuple[Params, dict[str, Any]]:
  metadata = load_metadata(directory)
  params_dir = os.path.join(directory, PARAMS_ITEM)
  if not os.path.isdir(params_dir):
    raise CheckpointError(f"{directory}: the {PARAMS_ITEM}/ directory is "
                          "missing; convert the weights again.")
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(params_dir)
  except Exception as e:  # Orbax raises several types for damaged data.
    raise CheckpointError(f"{params_dir}: cannot restore "
                          f"({type(e).__name__}: {e}); convert the weights "
                          "again.") from None
  return jax.tree.map(np.asarray, dict(restored)), metadata


# --------------------------------------------------------------------------
# The one loader.
# --------------------------------------------------------------------------


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
    return class_names(self.metadata)

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
    FileNotFoundError: Nothing is there; the message says how to make it.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no such weights or checkpoint: {path} (convert pretrained files "
        "with python -m fcn_jax.convert, see the README's 'Pretrained "
        "weights', or give a training workdir)")
  return path


def _is_step_dir(path: str) -> bool:
  return (os.path.isdir(os.path.join(path, PARAMS_ITEM))
          and os.path.isdir(os.path.join(path, METADATA_ITEM))
          and os.path.basename(os.path.normpath(path)).isdigit())


def _read_training_checkpoint(path: str, step: str | int
                              ) -> tuple[Params, dict[str, Any], str, int,
                                         str]:
  """``(params, metadata, step_dir, step, reason)`` from a training path."""
  if _is_step_dir(path):
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
    FileNotFoundError: Nothing at ``path``.
    CheckpointError: Not a checkpoint, no such step, or parameters that do
      not fit the recorded model.
  """
  path = existing_source(path)
  step = parse_step(step)
  if is_weights_export(path):
    if step not in (BEST, LATEST):
      raise CheckpointError(f"{path} is a weights export, which has no "
                            f"steps; --step {step} applies to workdirs")
    params, metadata = _read_weights_export(path)
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
    spec = model_spec(metadata, **spec_overrides)
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
