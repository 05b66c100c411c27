"""Multi-host training and evaluation, with real processes on one machine.

Runs the real CLI (``python -m fcn_jax.main``) through ``launch/local.py``:
2 processes x 2 CPU devices, joined by a coordinator on localhost, against 1
process x 4 devices, on the tiny synthetic dataset with a tiny FCN-AlexNet
(``width_divisor`` 64, 32 px crops: 7 random trunk layers to compile, not
FCN-8s' 15, in every process of every run, the compilation cache being off
in multi-process CPU runs). Dropout (0.5) and random mirroring stay
on: the global batches, their split over devices and the per-device dropout
keys must all be independent of the number of hosts for the results to
match.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fcn_jax import checkpointing
from fcn_jax.data import data_sources
from fcn_jax import parallel
from fcn_jax.datasets import common

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local.py"
DATASET = "synthetic_shapes/tiny"  # 16 train and 10 val images.
NUM_STEPS = 12
NUM_CLASSES = 21
TIMEOUT = 600  # Per run: a 2-core machine at load 20 took over 300 s.
FINGERPRINT = re.compile(r"Saving step (\d+) \(parameters fingerprint "
                         r"([0-9a-f]{16})\)")


def _env(cache_dir=None):
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  if cache_dir:
    # Later 1-process runs load the steps compiled by earlier ones (the same
    # programs). 2-process runs turn the cache off (see
    # compilation_cache.turn_off_for_cpu_processes), as users' runs do.
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  return env


def _overrides(data_dir, *extra):
  return [
      f"--config.dataset.name={DATASET}",
      f"--config.dataset.data_dir={data_dir}",
      "--config.model.name=fcn_alexnet",
      "--config.model.width_divisor=64",
      "--config.model.dropout_rate=0.5",
      f"--config.num_train_steps={NUM_STEPS}",
      "--config.eval_every_steps=0",  # Only at the end.
      "--config.log_every_steps=1",
      f"--config.checkpoint.every_steps={NUM_STEPS // 2}",
      "--config.batch_size=4",
      "--config.eval_batch_size=4",  # 10 val images: padding on every host.
      "--config.input.crop_size=32",
      "--config.input.eval_pad_size=48",
      *extra,
  ]


class Run:
  """One launch of the CLI on ``num_processes`` x ``devices`` CPU devices."""

  def __init__(self, tmp_dir, name, num_processes, devices, data_dir, *extra,
               workdir=None):
    self.workdir = pathlib.Path(workdir or tmp_dir / name)
    self.log_dir = tmp_dir / f"{name}_logs"
    self.num_processes = num_processes
    self.proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--num_processes", str(num_processes),
         "--devices_per_process", str(devices), "--log_dir", str(self.log_dir),
         "--", sys.executable, "-m", "fcn_jax.main",
         "--config", str(REPO / "configs" / "quickstart.py"),
         "--workdir", str(self.workdir), *_overrides(data_dir, *extra)],
        env=_env(tmp_dir / "jax_cache"), cwd=tmp_dir)

  def wait(self):
    try:
      code = self.proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      self.proc.kill()  # Its processes die with it (launch/local.py).
      self.proc.wait()
      raise AssertionError(f"timed out after {TIMEOUT} s:\n{self.tail()}")
    assert code == 0, self.tail()
    return self

  def logs(self):
    return [(self.log_dir / f"process_{i}.log").read_text()
            for i in range(self.num_processes)]

  def tail(self):
    return "\n".join(f"--- process {i}:\n{log[-3000:]}"
                     for i, log in enumerate(self.logs()))

  def records(self, split):
    path = self.workdir / "metrics.jsonl"
    if not path.exists():
      return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]

  def fingerprints(self, step):
    """The parameters fingerprint each process logged when saving ``step``."""
    return [dict(FINGERPRINT.findall(log)).get(str(step))
            for log in self.logs()]


def _checkpoint_params(workdir, step):
  checkpointer = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    assert step in checkpointer.all_steps(), checkpointer.all_steps()
    params, _ = checkpointer.restore_params(step)
  finally:
    checkpointer.close()
  return params


def _assert_params_close(got, want):
  flat_got = dict(_flatten(got))
  flat_want = dict(_flatten(want))
  assert flat_got.keys() == flat_want.keys()
  for name, value in flat_want.items():
    np.testing.assert_allclose(flat_got[name], value, rtol=1e-6, atol=1e-6,
                               err_msg=name)


def _flatten(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, f"{prefix}{key}/")
    else:
      yield f"{prefix}{key}", np.asarray(value)


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("multihost")


@pytest.fixture(scope="module")
def data_dir(tmp_dir):
  # Generated once here, not concurrently by the launched processes.
  path = tmp_dir / "tfds"
  data_sources.open_split(DATASET, "synthetic_val", str(path))
  return path


@pytest.fixture(scope="module")
def two_hosts(tmp_dir, data_dir):
  """2 processes x 2 devices, uninterrupted, evaluated at the end."""
  return Run(tmp_dir, "two_hosts", 2, 2, data_dir).wait()


@pytest.fixture(scope="module")
def two_hosts_jit(tmp_dir, data_dir):
  """As two_hosts, with config.parallel=jit (one global mesh)."""
  return Run(tmp_dir, "two_hosts_jit", 2, 2, data_dir,
             "--config.parallel=jit").wait()


@pytest.fixture(scope="module")
def one_host(tmp_dir, data_dir):
  """1 process x 4 devices, the same global batches."""
  return Run(tmp_dir, "one_host", 1, 4, data_dir, "--config.mode=train").wait()


def test_two_hosts_train_exactly_like_one_host(two_hosts, one_host):
  final = _checkpoint_params(two_hosts.workdir, NUM_STEPS)
  _assert_params_close(_checkpoint_params(one_host.workdir, NUM_STEPS), final)
  middle = _checkpoint_params(two_hosts.workdir, NUM_STEPS // 2)
  _assert_params_close(_checkpoint_params(one_host.workdir, NUM_STEPS // 2),
                       middle)
  # Training moves the parameters: equality is not trivial.
  assert not np.allclose(middle["fc6"]["kernel"], final["fc6"]["kernel"])
  one, two = one_host.records("train"), two_hosts.records("train")
  np.testing.assert_allclose([r["loss"] for r in two],
                             [r["loss"] for r in one], rtol=1e-5)
  assert len({r["loss"] for r in two}) > 1

  # Both processes held the parameters that process 0 checkpointed.
  expected = parallel.fingerprint(final)
  assert two_hosts.fingerprints(NUM_STEPS) == [expected, expected]


def test_two_hosts_with_jit_train_and_evaluate_as_with_pmap(
    two_hosts_jit, two_hosts, one_host):
  for log, other in zip(two_hosts_jit.logs(), two_hosts.logs()):
    assert f"-> {NUM_STEPS} (parallel=jit)." in log
    assert f"-> {NUM_STEPS} (parallel=pmap)." in other
  final = _checkpoint_params(two_hosts_jit.workdir, NUM_STEPS)
  _assert_params_close(final, _checkpoint_params(one_host.workdir, NUM_STEPS))
  np.testing.assert_allclose(
      [r["loss"] for r in two_hosts_jit.records("train")],
      [r["loss"] for r in one_host.records("train")], rtol=1e-5)
  assert two_hosts_jit.fingerprints(NUM_STEPS) == [
      parallel.fingerprint(final)] * 2
  (jit_eval,), (pmap_eval,) = (two_hosts_jit.records("eval"),
                               two_hosts.records("eval"))
  assert jit_eval["num_images"] == pmap_eval["num_images"] == 10
  for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
    assert jit_eval[key] == pytest.approx(pmap_eval[key], rel=1e-6)


def test_only_process_0_writes_logs_and_metrics(two_hosts):
  assert [r["step"] for r in two_hosts.records("train")] == list(
      range(1, NUM_STEPS + 1))
  evals = two_hosts.records("eval")
  assert [r["step"] for r in evals] == [NUM_STEPS]
  assert evals[0]["num_images"] == 10  # Each image once, padding not counted.
  for log in two_hosts.logs():  # Each compiles every program itself.
    assert "Compilation cache off: 2 CPU processes" in log
  # One TensorBoard writer; every process prints its own console log.
  assert len(list((two_hosts.workdir / "tensorboard").iterdir())) == 1
  assert (two_hosts.workdir / "config.json").exists()
  assert not list(two_hosts.workdir.glob("*.tmp"))


def test_sigterm_saves_and_a_rerun_on_one_process_resumes_to_the_same_params(
    tmp_dir, data_dir, two_hosts, one_host):
  """SIGTERM stops both hosts at one step and saves it; the rerun, on 1
  process x 4 devices (a checkpoint saved by N processes resumes on M),
  continues from the same global data position: the uninterrupted result.
  (one_host first: the 1-process rerun loads its compiled steps.)"""
  run = Run(tmp_dir, "preempted", 2, 2, data_dir, "--config.mode=train")
  deadline = time.time() + TIMEOUT
  while not run.records("train"):  # Training is under way on both hosts.
    assert run.proc.poll() is None, run.tail()
    if time.time() > deadline:
      run.proc.kill()  # Its processes die with it (launch/local.py).
      raise AssertionError(f"no training step was logged:\n{run.tail()}")
    time.sleep(0.05)
  run.proc.send_signal(signal.SIGTERM)
  run.wait()  # Exit code 0.
  stopped = [r["step"] for r in run.records("train")]
  assert stopped == list(range(1, stopped[-1] + 1))
  stop_step = stopped[-1]
  assert stop_step < NUM_STEPS, "training finished before the SIGTERM"
  for log in run.logs():  # Both processes stopped at the same step.
    assert f"Preempted: saved step {stop_step};" in log
  checkpointer = checkpointing.Checkpointer(str(run.workdir), read_only=True)
  assert checkpointer.latest_step() == stop_step
  checkpointer.close()
  saved = sorted(p.name for p in (run.workdir / "checkpoints" /
                                  str(stop_step) / "data_iter").glob("*.json"))
  assert saved == ["process_0-of-2.json", "process_1-of-2.json"]

  resumed = Run(tmp_dir, "resumed", 1, 4, data_dir, "--config.mode=train",
                workdir=run.workdir).wait()
  log, = resumed.logs()
  assert ("was saved by 2 processes; resuming on 1 from the same global data "
          "position") in log
  assert f"Resumed from {run.workdir}/checkpoints/{stop_step}." in log
  assert [r["step"] for r in resumed.records("train")] == list(
      range(1, NUM_STEPS + 1))  # One line per step, over both runs.
  _assert_params_close(_checkpoint_params(run.workdir, NUM_STEPS),
                       _checkpoint_params(two_hosts.workdir, NUM_STEPS))
  np.testing.assert_allclose(
      [r["loss"] for r in resumed.records("train")],
      [r["loss"] for r in two_hosts.records("train")], rtol=1e-5)
  assert not (run.workdir / checkpointing.LOCK_FILE).exists()


def _val_label_counts(data_dir):
  """Per-class pixel counts of the val split's labels, read directly."""
  split = data_sources.open_split(DATASET, "synthetic_val", str(data_dir))
  counts = np.zeros(NUM_CLASSES, np.int64)
  for record in split.records:
    label = common.decode_mask(record[common.MASK]).ravel()
    counts += np.bincount(label[label < NUM_CLASSES], minlength=NUM_CLASSES)
  return counts


def test_eval_on_two_hosts_equals_one_host(tmp_dir, data_dir, two_hosts):
  checkpoint = f"--config.init_from={two_hosts.workdir}/checkpoints/{NUM_STEPS}"
  results = {}
  for name, processes, devices in (("eval_2x2", 2, 2), ("eval_1x1", 1, 1)):
    run = Run(tmp_dir, name, processes, devices, data_dir,
              "--config.mode=eval", checkpoint).wait()
    results[name] = json.loads((run.workdir / "eval_results.json").read_text())
    # Every host runs the same number of batches: 10 images over 2 hosts in
    # local batches of 2 (3 batches, the last padded) or of 4 on one host.
    batches = "in 3 batches of 2" if processes == 2 else "in 3 batches of 4"
    assert all(batches in log for log in run.logs())
  two, one = results["eval_2x2"], results["eval_1x1"]
  assert two["step"] == one["step"] == NUM_STEPS
  hist = np.asarray(one["metrics"]["confusion_matrix"])
  np.testing.assert_array_equal(two["metrics"]["confusion_matrix"], hist)
  # Every labelled pixel of the split once: padding is never counted.
  np.testing.assert_array_equal(hist.sum(axis=1), _val_label_counts(data_dir))
  assert two["metrics"]["num_images"] == one["metrics"]["num_images"] == 10
  for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
    assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-9)
    assert two_hosts.records("eval")[0][key] == pytest.approx(
        one["metrics"][key], rel=1e-9)  # The in-training evaluation too.
  assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"],
                                                 rel=1e-5)
  assert (hist.trace() / hist.sum()) == pytest.approx(
      one["metrics"]["pixel_acc"], rel=1e-12)


CHECK_WORKER = r"""
import sys
from fcn_jax import distributed
distributed.maybe_initialize()
import jax, numpy as np
from fcn_jax import parallel
tree = {"conv1_1": {"kernel": np.arange(6.0, dtype=np.float32).reshape(2, 3),
                    "bias": np.ones(3, np.float32)}, "step": np.int32(7)}
parallel.check_same_across_processes(tree, "train states")
print("equal trees pass", flush=True)
if jax.process_index() == 1:
  tree["conv1_1"]["kernel"][1, 2] += 1e-6
try:
  parallel.check_same_across_processes(tree, "train states")
except RuntimeError as e:
  print(f"raised: {e}", flush=True)
"""


def test_diverged_replicas_are_detected_on_every_process(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(CHECK_WORKER)
  subprocess.run(
      [sys.executable, str(LAUNCHER), "--num_processes", "2",
       "--devices_per_process", "1", "--log_dir", str(tmp_path / "logs"), "--",
       sys.executable, str(script)], env=_env(), check=True, timeout=TIMEOUT)
  for i in range(2):
    log = (tmp_path / "logs" / f"process_{i}.log").read_text()
    assert "equal trees pass" in log, log
    assert ("raised: The train states differ across the 2 processes in 1 of "
            "3 arrays (['conv1_1']['kernel'])") in log, log


def test_fingerprint_sees_any_change():
  tree = {"a": {"kernel": np.linspace(-1, 1, 12, dtype=np.float32)},
          "b": np.zeros((2, 2), np.float32)}
  copy = {"a": {"kernel": tree["a"]["kernel"].copy()}, "b": tree["b"].copy()}
  assert parallel.fingerprint(tree) == parallel.fingerprint(copy)
  copy["a"]["kernel"][5] = np.nextafter(copy["a"]["kernel"][5], np.inf)
  assert parallel.fingerprint(tree) != parallel.fingerprint(copy)
  renamed = {"c": {"kernel": tree["a"]["kernel"]}, "b": tree["b"]}
  assert parallel.fingerprint(tree) != parallel.fingerprint(renamed)
  reshaped = {"a": {"kernel": tree["a"]["kernel"].reshape(3, 4)},
              "b": tree["b"]}
  assert parallel.fingerprint(tree) != parallel.fingerprint(reshaped)


def _resumable_copy(source, target):
  """``source``'s workdir as if preempted right after its middle checkpoint
  (the final one removed, the metrics of later steps replayed on resume)."""
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(source.workdir, target)
  shutil.rmtree(target / "checkpoints" / str(NUM_STEPS))
  for leftover in target.glob("checkpoints/*.orbax-checkpoint-tmp*"):
    shutil.rmtree(leftover)
  return target


def test_resume_on_two_processes_equals_the_uninterrupted_run(
    tmp_dir, data_dir, one_host):
  """A checkpoint saved by 1 process resumes on 2 (the other direction is in
  the SIGTERM test): each new host continues from the same global data
  position, so the result equals the uninterrupted run."""
  workdir = _resumable_copy(one_host, tmp_dir / "resumed_1_to_2")
  saved = sorted(p.name for p in
                 (workdir / "checkpoints" / str(NUM_STEPS // 2) /
                  "data_iter").glob("*.json"))
  assert saved == ["process_0-of-1.json"]
  resumed = Run(tmp_dir, "resumed_1_to_2", 2, 2, data_dir,
                "--config.mode=train", workdir=workdir).wait()
  for log in resumed.logs():
    assert ("was saved by 1 processes; resuming on 2 from the same global "
            "data position") in log
    assert f"Resumed from {workdir}/checkpoints/{NUM_STEPS // 2}." in log
  _assert_params_close(_checkpoint_params(workdir, NUM_STEPS),
                       _checkpoint_params(one_host.workdir, NUM_STEPS))
  np.testing.assert_allclose(
      [r["loss"] for r in resumed.records("train")][NUM_STEPS // 2:],
      [r["loss"] for r in one_host.records("train")][NUM_STEPS // 2:],
      rtol=1e-5)
  assert not (workdir / checkpointing.LOCK_FILE).exists()
