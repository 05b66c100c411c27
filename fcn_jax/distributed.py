"""Multi-process start-up, meeting points, hang detection and preemption.

One host needs nothing: :func:`maybe_initialize` is then a no-op. Several
processes (TPU pod hosts, SLURM tasks, or local processes in the tests) call
``jax.distributed.initialize`` before touching any device:

* Cloud TPU pods, SLURM (``srun``) and Open MPI are detected by JAX itself.
* Anywhere else, give the coordinator explicitly, by flags or by the
  environment variables ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process
  0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

The processes must reach each collective close together: on CPUs the first
run of each program sets up Gloo's connections with a fixed 30 s deadline
(not configurable in jaxlib 0.10-0.12), and a miss fails or hangs the run.
So every step program of a multi-process run is wrapped
(:class:`MeetAtFirstRun`, by :func:`fcn_jax.parallel.replicate_step`): the
first call with new shapes compiles it ahead, then the processes meet at a
:func:`barrier` (``$FCN_JAX_BARRIER_TIMEOUT`` s, default 600; its error names
the process that did not come), then it runs. A process that then finishes
no step for ``$FCN_JAX_HANG_TIMEOUT`` s (default 1200; 0: never), e.g. one
stuck in a collective whose peer died, exits with one error line instead of
hanging: while stuck in a collective it runs no Python code, so not even a
SIGTERM handler (:class:`Watchdog`).

:class:`PreemptionWatcher` turns SIGTERM (what Cloud TPU and SLURM send before
taking machines away) into a clean stop at a step every process agrees on.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from fcn_jax import compilation_cache
from fcn_jax import errors

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"
ENV_BARRIER_TIMEOUT = "FCN_JAX_BARRIER_TIMEOUT"
ENV_HANG_TIMEOUT = "FCN_JAX_HANG_TIMEOUT"
DEFAULT_BARRIER_TIMEOUT_S = 600
DEFAULT_HANG_TIMEOUT_S = 1200
HANG_EXIT_CODE = 1
EXIT_GRACE_S = 60


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise errors.UserError(
        f"${name} must be an integer, got {value!r}.") from None


def _env_seconds(name: str, default: int, minimum: int) -> int:
  value = _env_int(name)
  if value is None:
    return default
  if value < minimum:
    raise errors.UserError(
        f"${name} must be >= {minimum} (seconds), got {value}.")
  return value


def barrier_timeout() -> int:
  """Seconds a process waits for the others at a meeting point (and for
  the coordinator at start-up): ``$FCN_JAX_BARRIER_TIMEOUT``, default 600."""
  return _env_seconds(ENV_BARRIER_TIMEOUT, DEFAULT_BARRIER_TIMEOUT_S, 1)


def hang_timeout() -> int:
  """Seconds without progress after which a process of a multi-process run
  exits (:class:`Watchdog`): ``$FCN_JAX_HANG_TIMEOUT``, default 1200; 0:
  never."""
  return _env_seconds(ENV_HANG_TIMEOUT, DEFAULT_HANG_TIMEOUT_S, 0)


def detected_cluster() -> str | None:
  """Names the multi-process cluster JAX can auto-configure, if any."""
  if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get(
      "SLURM_STEP_NODELIST"):
    return "slurm"
  if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "ompi"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts:
    return "cloud_tpu"
  return None


def maybe_initialize(coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None,
                     local_device_ids: Sequence[int] | None = None) -> bool:
  """Starts multi-process JAX when this is a multi-process run.

  Must run before anything touches a device. Explicit arguments win over the
  environment; without either, clusters JAX knows (see
  :func:`detected_cluster`) are initialised automatically, and a plain single
  host is left alone.

  Returns:
    Whether ``jax.distributed.initialize`` was called.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)
  if local_device_ids is None and os.environ.get(ENV_LOCAL_DEVICE_IDS):
    text = os.environ[ENV_LOCAL_DEVICE_IDS]
    try:
      local_device_ids = [int(i) for i in text.split(",")]
    except ValueError:
      raise errors.UserError(
          f"${ENV_LOCAL_DEVICE_IDS} must be comma-separated device numbers "
          f"such as 0,1; got {text!r}.") from None
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise errors.UserError(
          "A coordinator address was given but not the number of processes "
          "and this process's id: set both (flags --num_processes/--process_id "
          f"or ${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID}).")
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=barrier_timeout())
  elif detected_cluster():
    logging.info("Detected a %s cluster; initialising JAX distributed.",
                 detected_cluster())
    jax.distributed.initialize(local_device_ids=local_device_ids,
                               initialization_timeout=barrier_timeout())
  else:
    return False
  # Before anything compiles: on CPUs the cache would make the processes
  # arrive at each collective tens of seconds apart.
  compilation_cache.turn_off_for_cpu_processes()
  logging.info("JAX process %d of %d, %d local devices, %d global devices.",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def is_multiprocess() -> bool:
  return jax.process_count() > 1


class ProcessesOutOfStepError(TimeoutError):
  """Some process did not reach a meeting point in time (a slow or stuck
  host; its log says where it is)."""


_barrier_ids = itertools.count()


def _client() -> Any:
  # The coordination service's client: JAX has no public barrier that is not
  # itself a device collective (multihost_utils.sync_global_devices is one,
  # and would meet Gloo's deadline); checked on jax 0.10.2 and 0.12.1.
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def barrier(what: str, timeout_s: int | None = None) -> None:
  """Waits until every process has reached this point (a no-op on one).

  Every process must call it at the same point of the same program, the
  same number of times. It goes through the coordination service, not the
  devices, so it has no start-up deadline of its own.

  Args:
    what: The point, for the error message ("the first run of train_step").
    timeout_s: Default :func:`barrier_timeout`.

  Raises:
    ProcessesOutOfStepError: Not every process came within ``timeout_s``;
      the message names those that did not.
  """
  if not is_multiprocess():
    return
  client = _client()
  if client is None:  # Not started by jax.distributed: nothing to meet on.
    return
  timeout_s = timeout_s or barrier_timeout()
  name = f"fcn_jax_barrier_{next(_barrier_ids)}"
  me, count = jax.process_index(), jax.process_count()
  client.key_value_set(f"{name}/arrived/{me}", what)
  start = time.monotonic()
  try:
    client.wait_at_barrier(name, int(timeout_s * 1000))
    logging.info("All %d processes reached %s (this one waited %.1f s).",
                 count, what, time.monotonic() - start)
  except Exception as e:  # pylint: disable=broad-except
    # JaxRuntimeError DEADLINE_EXCEEDED (or the barrier failed on a peer).
    logging.debug("Barrier %s: %s", name, e)
    try:
      arrived = {int(key.rsplit("/", 1)[-1]) for key, _ in
                 client.key_value_dir_get(f"{name}/arrived/")}
    except Exception:  # pylint: disable=broad-except
      arrived = {me}
    missing = sorted(set(range(count)) - arrived)
    late = (f"process(es) {', '.join(map(str, missing))} of {count} did not "
            f"reach {what} within {timeout_s} s (process {me} waited)"
            if missing else
            f"process {me} of {count} reached {what} more than {timeout_s} s "
            "after the others")
    # JAX's exit waits for every process (up to 300 s); one that did not
    # come will not: leave after the clean-up that can run without it.
    Watchdog.get().exit_within(min(timeout_s, EXIT_GRACE_S))
    raise ProcessesOutOfStepError(
        f"{late}: a slow or stuck host (see its log); if it is only slow, "
        f"raise ${ENV_BARRIER_TIMEOUT} (seconds).") from None


def _signature(args: Sequence[Any]) -> Any:
  """What a compiled program depends on: tree structure, shapes, dtypes and
  shardings of the arguments."""
  leaves, tree = jax.tree_util.tree_flatten(args)
  return tree, tuple(
      (np.shape(x), str(getattr(x, "dtype", type(x))),
       getattr(x, "sharding", None)) for x in leaves)


class MeetAtFirstRun:
  """A step function of a multi-process run whose every program starts
  together on all processes.

  The first call with new argument shapes compiles the program ahead of
  time (``fn.lower(*args).compile()``; the call then reuses it), waits at a
  :func:`barrier` and only then runs it: its collectives' start-up then
  sees the processes at most a moment apart, however long the compile or the
  work before it took on each. Every call counts as progress for the
  :class:`Watchdog`, which waits while compiling and meeting.

  Args:
    fn: A pmapped or jitted step with a ``lower`` method taking the call's
      arguments (see :func:`fcn_jax.parallel.replicate_step`).
    what: Its name, for messages.
  """

  def __init__(self, fn: Callable[..., Any], what: str):
    self._fn = fn
    self._what = what
    self._seen = set()

  def __call__(self, *args: Any) -> Any:
    signature = _signature(args)
    if signature not in self._seen:
      with Watchdog.get().paused():
        self._fn.lower(*args).compile()
        count = len(self._seen)
        barrier(f"the first run of {self._what}" + (
            f" with new argument shapes or placement ({count + 1})"
            if count else ""))
      self._seen.add(signature)
    Watchdog.get().beat(self._what)
    return self._fn(*args)

  def lower(self, *args: Any) -> Any:
    return self._fn.lower(*args)


class Watchdog:
  """Ends a process of a multi-process run that has stopped making progress.

  A process stuck in a collective (a peer died or never came) waits in C++
  for ever, where no Python code runs: not a SIGTERM handler either. This
  daemon thread checks every few seconds when the last step started
  (:meth:`beat`); after :func:`hang_timeout` seconds without one (outside
  :meth:`paused` sections: compiling, meeting) it prints one error line,
  where the main thread is stuck, and exits with :data:`HANG_EXIT_CODE`
  (``os._exit``: the stuck thread cannot be unwound; a workdir lock it
  leaves is stale and taken over by the next run). It starts with the first
  step, so the start-up (data, restoring) is not timed; off with
  ``$FCN_JAX_HANG_TIMEOUT=0``. It also bounds the exit after an error that
  the other processes will not join (:meth:`exit_within`). One process:
  nothing runs.
  """

  _instance: Watchdog | None = None
  _lock = threading.Lock()

  def __init__(self, timeout_s: int):
    self.timeout_s = timeout_s
    self._last = None  # Not armed before the first beat.
    self._what = ""
    self._paused = 0
    self._exit_by = None
    if is_multiprocess():
      threading.Thread(target=self._watch, daemon=True,
                       name="fcn_jax-watchdog").start()

  @classmethod
  def get(cls) -> Watchdog:
    """The process's watchdog (started on first use)."""
    with cls._lock:
      if cls._instance is None:
        cls._instance = Watchdog(hang_timeout())
      return cls._instance

  def beat(self, what: str) -> None:
    """Progress: ``what`` starts now."""
    self._last, self._what = time.monotonic(), what

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """A section with no time limit of its own (compiling, a barrier)."""
    self._paused += 1
    try:
      yield
    finally:
      self._paused -= 1
      self.beat(self._what)

  def exit_within(self, seconds: float) -> None:
    """Ends the process ``seconds`` from now if it has not exited (its
    error is reported; what remains would wait for absent processes)."""
    self._exit_by = time.monotonic() + seconds

  def _watch(self) -> None:
    interval = max(0.2, min(5.0, (self.timeout_s or 100) / 20))
    while True:
      time.sleep(interval)
      now = time.monotonic()
      if self._exit_by is not None and now > self._exit_by:
        logging.warning("Not waiting for the other processes to exit.")
        logging.flush()
        os._exit(HANG_EXIT_CODE)  # pylint: disable=protected-access
      last = self._last
      if (self.timeout_s and last is not None and not self._paused
          and now - last > self.timeout_s):
        self._exit_hung(now - last)

  def _exit_hung(self, idle: float) -> None:
    frames = sys._current_frames().get(threading.main_thread().ident)  # pylint: disable=protected-access
    where = "?"
    if frames is not None:
      here = traceback.extract_stack(frames)[-1]
      where = f"{os.path.basename(here.filename)}:{here.lineno} ({here.line})"
    message = (
        f"process {jax.process_index()} of {jax.process_count()} made no "
        f"progress for {idle:.0f} s after starting {self._what} (stuck at "
        f"{where}): another process is probably stuck or gone, see its log; "
        f"exiting. If a step can take that long, raise ${ENV_HANG_TIMEOUT} "
        "(seconds; 0: never).")
    logging.error("%s", message)
    logging.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(HANG_EXIT_CODE)  # pylint: disable=protected-access


class PreemptionWatcher:
  """Tells the training loop when to save and stop after a SIGTERM.

  On one process a SIGTERM handler sets a flag, and :meth:`should_stop` is
  true from the next step on. With several processes JAX's preemption sync
  service (started by ``jax.distributed.initialize``) picks one step that all
  processes reach, so they all save the same checkpoint and exit together.
  Call :meth:`should_stop` once per training step, on every process.
  """

  def __init__(self):
    self._received = threading.Event()
    self._previous = None
    self._use_sync_service = False
    if is_multiprocess():
      # jax.distributed.initialize starts JAX's preemption sync service when
      # this public option is on (the default); the public
      # multihost_utils.reached_preemption_sync_point then works.
      self._use_sync_service = bool(jax.config.jax_enable_preemption_service)
    if not self._use_sync_service:
      if threading.current_thread() is threading.main_thread():
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      else:
        logging.warning("Not on the main thread: SIGTERM is not handled.")

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: finishing this step, saving a "
                    "checkpoint and exiting.")
    self._received.set()

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after ``step`` (call at every step)."""
    if self._use_sync_service:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received.is_set()

  def requested(self) -> bool:
    """Whether a SIGTERM has arrived (one process: at once, from any
    point of the start-up, with no step to agree on). On several processes
    always False: there only :meth:`should_stop` may decide, at a step
    every process reaches."""
    return not self._use_sync_service and self._received.is_set()

  def close(self):
    """Restores the previous SIGTERM handler."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
