"""Multi-process start-up and preemption, with real local processes."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from fcn_jax import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local.py"

WORKER = r"""
import sys, time
from fcn_jax import distributed
initialized = distributed.maybe_initialize()
import jax, numpy as np
x = np.full((jax.local_device_count(),), jax.process_index() + 1.0)
out = jax.pmap(lambda v: jax.lax.psum(v, 'i'), axis_name='i')(x)
print(f"init={initialized} process={jax.process_index()} of {jax.process_count()} "
      f"devices={jax.device_count()} psum={float(out.addressable_shards[0].data[0])}",
      flush=True)
watcher = distributed.PreemptionWatcher()
open(sys.argv[1] + f".ready{jax.process_index()}", "w").close()
for step in range(1, int(sys.argv[2])):
  time.sleep(0.05)
  if watcher.should_stop(step):
    print(f"stopped at step {step}", flush=True)
    break
"""


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  return env


def _launch(tmp_path, num_processes, steps):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  return subprocess.Popen(
      [sys.executable, str(LAUNCHER), "--num_processes", str(num_processes),
       "--devices_per_process", "2", "--log_dir", str(tmp_path / "logs"), "--",
       sys.executable, str(script), str(tmp_path / "flag"), str(steps)],
      env=_env())


def _logs(tmp_path, num_processes):
  return [(tmp_path / "logs" / f"process_{i}.log").read_text()
          for i in range(num_processes)]


def test_two_processes_form_one_four_device_run(tmp_path):
  proc = _launch(tmp_path, 2, steps=2)
  assert proc.wait(timeout=120) == 0
  for i, log in enumerate(_logs(tmp_path, 2)):
    # Devices of process 0 hold 1.0, of process 1 hold 2.0: psum = 2*1 + 2*2.
    assert f"init=True process={i} of 2 devices=4 psum=6.0" in log, log


def test_sigterm_stops_all_processes_at_one_step(tmp_path):
  proc = _launch(tmp_path, 2, steps=100_000)
  deadline = time.time() + 120
  while not all((tmp_path / f"flag.ready{i}").exists() for i in range(2)):
    assert time.time() < deadline and proc.poll() is None, "workers did not start"
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 0
  steps = [re.search(r"stopped at step (\d+)", log) for log in _logs(tmp_path, 2)]
  assert all(steps), _logs(tmp_path, 2)
  assert steps[0].group(1) == steps[1].group(1)


def test_single_process_is_a_no_op_and_sigterm_sets_the_flag(monkeypatch):
  for key in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
              "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(key, raising=False)
  assert distributed.maybe_initialize() is False
  watcher = distributed.PreemptionWatcher()
  try:
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    assert watcher.should_stop(2)
  finally:
    watcher.close()


def test_explicit_coordinator_needs_process_count_and_id(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    distributed.maybe_initialize()


def test_cluster_detection(monkeypatch):
  for key in ("SLURM_NTASKS", "SLURM_STEP_NODELIST", "OMPI_COMM_WORLD_SIZE",
              "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(key, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node1")
  assert distributed.detected_cluster() is None  # one task: nothing to join
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert distributed.detected_cluster() == "slurm"
