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


def _env(**extra):
  env = dict(os.environ, **extra)
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


# Runs a data-parallel step (fcn_jax.parallel.replicate_step, as training and
# evaluation do) on 2 processes x 2 devices, in the ways a run can go wrong.
# argv: mode, then the parallel modes ("pmap,jit"), the seconds process 0
# works before the last mode's step (a skew), and a folder for process ids.
STEP_WORKER = r"""
import os, sys, time
from fcn_jax import distributed
distributed.maybe_initialize()
import jax, numpy as np
from jax._src import monitoring
from fcn_jax import parallel
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: compiles.append(name)
    if name == "/jax/core/compile/backend_compile_duration" else None)
what, modes, skew, pid_dir = sys.argv[1:]
me = jax.process_index()
open(os.path.join(pid_dir, f"{me}.pid"), "w").write(str(os.getpid()))

def step(state, batch):
  return state + parallel.psum(batch.sum()), batch * 2

batch = np.full((jax.local_device_count(), 3), me + 1.0, np.float32)
for mode in modes.split(","):
  fn = parallel.replicate_step(step, jax.local_devices(),
                               per_device_outputs=(False, True), mode=mode)
  if me == 0 and mode == modes.split(",")[-1]:
    time.sleep(float(skew))  # Process 0's work before it (writes, loads).
  if what == "absent" and me == 1:
    time.sleep(600)  # Never comes.
  before, state = len(compiles), np.float32(0)
  for _ in range(3):
    state, _ = fn(state, batch)
  total = float(np.asarray(jax.device_get(
      state.addressable_data(0) if mode == "jit" else state)).ravel()[0])
  print(f"{mode}: state {total} after {len(compiles) - before} compile(s)",
        flush=True)
  if what == "stuck":
    if me == 1:
      time.sleep(600)  # Alive, but never in the next step's collective.
    state, _ = fn(state, batch)
    jax.block_until_ready(state)
    print("the stuck step returned", flush=True)
"""


def _launch_steps(tmp_path, what, modes, skew=0, kill_after=120, **env):
  script = tmp_path / "step_worker.py"
  script.write_text(STEP_WORKER)
  pid_dir = tmp_path / "pids"
  pid_dir.mkdir()
  return subprocess.Popen(
      [sys.executable, str(LAUNCHER), "--num_processes", "2",
       "--devices_per_process", "2", "--log_dir", str(tmp_path / "logs"),
       "--kill_after", str(kill_after), "--", sys.executable, str(script),
       what, modes, str(skew), str(pid_dir)],
      env=_env(**env), stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout):
  """The launcher's stderr once it exits; killed (and with it, its
  processes) if it has not within ``timeout`` s."""
  try:
    return proc.communicate(timeout=timeout)[1]
  except subprocess.TimeoutExpired:
    proc.kill()
    raise


def _assert_all_exited(tmp_path):
  pids = [int(p.read_text()) for p in (tmp_path / "pids").iterdir()]
  assert len(pids) == 2
  for pid in pids:
    try:  # Gone, or a zombie (killed, not yet reaped by its new parent).
      with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "Z", pid
    except FileNotFoundError:
      pass


@pytest.fixture(scope="module", autouse=True)
def step_runs(tmp_path_factory):
  """The 2-process runs of the last tests of this file, started at the first
  test: each mostly waits (a late process, a timeout), so their waits overlap
  each other and this file's other tests.

  Returns:
    ``{name: (folder, launcher process)}``.
  """
  root = tmp_path_factory.mktemp("step_runs")
  runs = {}
  # Process 0 comes 35 s late, to its first step (pmap) and to a later new
  # step (jit, after a pmap step).
  for name, modes in (("late_first", "pmap"), ("late_later", "pmap,jit")):
    (root / name).mkdir()
    runs[name] = (root / name, _launch_steps(root / name, "late", modes,
                                             skew=35))
  (root / "absent").mkdir()
  runs["absent"] = (root / "absent", _launch_steps(
      root / "absent", "absent", "pmap", kill_after=5,
      FCN_JAX_BARRIER_TIMEOUT="5"))
  (root / "stuck").mkdir()
  runs["stuck"] = (root / "stuck", _launch_steps(
      root / "stuck", "stuck", "pmap", kill_after=5,
      FCN_JAX_HANG_TIMEOUT="5"))
  yield runs
  for _, proc in runs.values():  # A failed test's leftovers.
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_no_process_outlives_the_launcher(tmp_path):
  proc = _launch_steps(tmp_path, "stuck", "pmap", FCN_JAX_HANG_TIMEOUT="0")
  try:
    deadline = time.time() + 240
    while "pmap: state" not in "".join(_logs(tmp_path, 2)):
      assert time.time() < deadline and proc.poll() is None, _logs(tmp_path, 2)
      time.sleep(0.5)
  finally:
    proc.kill()  # As a test's timeout would: process 0 is stuck.
    proc.wait()
  time.sleep(1)
  _assert_all_exited(tmp_path)


def _logs(tmp_path, num_processes):
  return [(tmp_path / "logs" / f"process_{i}.log").read_text()
          if (tmp_path / "logs" / f"process_{i}.log").exists() else ""
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


def test_processes_start_a_step_together_however_late_one_is(step_runs):
  # Process 0 comes 35 s late, past Gloo's fixed 30 s deadline for setting
  # up a collective: without the meeting before a new step's first run,
  # process 1 fails (DEADLINE_EXCEEDED) or hangs.
  for name, modes in (("late_first", "pmap"), ("late_later", "pmap,jit")):
    folder, proc = step_runs[name]
    stderr = _finish(proc, 300)
    logs = _logs(folder, 2)
    assert proc.returncode == 0, stderr + "\n".join(logs)
    for log in logs:
      for mode in modes.split(","):
        # Each step adds the sum over 4 devices x 3 values: 2x3x1 + 2x3x2 =
        # 18. Compiled once per process: the first call reuses the
        # ahead-of-time compile that preceded the meeting.
        assert f"{mode}: state 54.0 after 1 compile(s)" in log, log


def test_a_process_that_does_not_come_is_named(step_runs):
  folder, proc = step_runs["absent"]
  stderr = _finish(proc, 240)
  assert proc.returncode != 0
  log0 = _logs(folder, 2)[0]
  assert ("process(es) 1 of 2 did not reach the first run of step within "
          "5 s (process 0 waited): a slow or stuck host (see its log); if it "
          "is only slow, raise $FCN_JAX_BARRIER_TIMEOUT (seconds).") in log0, (
              log0)
  # Process 0 left without waiting for process 1 at JAX's exit; process 1
  # (sleeping through SIGTERM, which JAX's preemption notifier takes) lost
  # its coordinator and aborted, or the launcher killed it.
  assert "process 0 exited with 1" in stderr, stderr
  _assert_all_exited(folder)


def test_a_process_stuck_in_a_collective_exits_with_one_line(step_runs):
  folder, proc = step_runs["stuck"]
  stderr = _finish(proc, 240)
  log0 = _logs(folder, 2)[0]
  assert proc.returncode == 1, stderr + log0
  assert "the stuck step returned" not in log0
  assert re.search(
      r"error: process 0 of 2 made no progress for \d+ s after starting "
      r"step \(stuck at \S+\.py:\d+ .*\): another process is probably stuck "
      r"or gone, see its log; exiting\. If a step can take that long, raise "
      r"\$FCN_JAX_HANG_TIMEOUT \(seconds; 0: never\)\.", log0), log0
  _assert_all_exited(folder)
