"""Multi-process start-up and preemption handling.

One host needs nothing: :func:`maybe_initialize` is then a no-op. Several
processes (TPU pod hosts, SLURM tasks, or local processes in the tests) call
``jax.distributed.initialize`` before touching any device:

* Cloud TPU pods, SLURM (``srun``) and Open MPI are detected by JAX itself.
* Anywhere else, give the coordinator explicitly, by flags or by the
  environment variables ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process
  0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

:class:`PreemptionWatcher` turns SIGTERM (what Cloud TPU and SLURM send before
taking machines away) into a clean stop at a step every process agrees on.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Sequence

import jax
from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name} must be an integer, got {value!r}.") from None


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
    local_device_ids = [
        int(i) for i in os.environ[ENV_LOCAL_DEVICE_IDS].split(",")]
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError(
          "A coordinator address was given but not the number of processes "
          "and this process's id: set both (flags --num_processes/--process_id "
          f"or ${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID}).")
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               local_device_ids=local_device_ids)
  elif detected_cluster():
    logging.info("Detected a %s cluster; initialising JAX distributed.",
                 detected_cluster())
    jax.distributed.initialize(local_device_ids=local_device_ids)
  else:
    return False
  logging.info("JAX process %d of %d, %d local devices, %d global devices.",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def is_multiprocess() -> bool:
  return jax.process_count() > 1


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
