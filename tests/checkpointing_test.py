"""Unit tests of the checkpointing package, by module: the step rule
(layout), the metadata round trip, the training checkpointer's step choice
and damage set-aside, the iterator-state migration (fcn_jax.data), and the
workdir lock (fcn_jax.training.workdir_lock): stale, unreadable, and a
multi-process race for one stale lock."""

import argparse
import asyncio
import errno
import gc
import json
import logging
import multiprocessing
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fcn_jax import checkpointing
from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax import models
from fcn_jax.data import iterator_state
from fcn_jax.data import preprocessing
from fcn_jax.training import workdir_lock

REPO = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# The step rule.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("best", "best"), (" Latest ", "latest"), ("12", 12), (7, 7),
    (np.int64(3), 3), ("0", 0)])
def test_parse_step_accepts_the_rules(text, expected):
  assert checkpointing.parse_step(text) == expected


@pytest.mark.parametrize("text", ["bestt", "", "-1", "1.5", True, -2])
def test_parse_step_names_the_accepted_values(text):
  with pytest.raises(errors.UserError) as info:
    checkpointing.parse_step(text)
  message = str(info.value)
  assert "'best'" in message and "'latest'" in message
  assert "step number" in message and repr(text) in message


def test_a_bad_step_flag_says_what_is_accepted(capsys):
  """argparse's ``type=`` reports the rule, not "invalid parse_step
  value"."""
  parser = argparse.ArgumentParser(prog="predict")
  parser.add_argument("--step", type=checkpointing.parse_step)
  with pytest.raises(SystemExit):
    parser.parse_args(["--step", "bestt"])
  err = capsys.readouterr().err
  assert "invalid parse_step value" not in err
  assert "--step must be 'best'" in err and "'latest' or a step number" in err


# --------------------------------------------------------------------------
# Metadata and weights exports.
# --------------------------------------------------------------------------

_SPEC = models.ModelSpec("fcn16s", 5, width_divisor=64,
                         upsample_mode="depthwise")


def _params(spec):
  shapes = models.param_shapes(spec.create())
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def test_metadata_round_trips_through_json():
  names = ["sky", "tree", "road", "car", "person"]
  metadata = checkpointing.make_metadata(
      _SPEC, preprocessing.TORCHVISION, class_names=names,
      source={"format": "test"}, step=3)
  read = json.loads(json.dumps(metadata))
  assert checkpointing.model_spec(read) == _SPEC
  assert checkpointing.class_names(read) == names
  assert preprocessing.Preprocessing.from_dict(
      read["preprocessing"]) == preprocessing.TORCHVISION
  assert read["format_version"] == checkpointing.FORMAT_VERSION
  assert read["step"] == 3 and read["source"] == {"format": "test"}


def test_metadata_refuses_a_wrong_class_count():
  with pytest.raises(errors.UserError, match="2 class names for a model of 5"):
    checkpointing.make_metadata(_SPEC, preprocessing.TORCHVISION,
                                class_names=["a", "b"])


def test_a_weights_export_round_trips(tmp_path):
  params = _params(_SPEC)
  metadata = checkpointing.make_metadata(_SPEC, preprocessing.CAFFE_VGG)
  path = checkpointing.save_weights(str(tmp_path / "w"), params, metadata)
  loaded = checkpointing.load(path)
  assert loaded.spec == _SPEC and loaded.step is None
  assert loaded.preprocessing == preprocessing.CAFFE_VGG
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded.params, params))
  with pytest.raises(checkpointing.CheckpointError, match="not empty"):
    checkpointing.save_weights(path, params, metadata)
  with pytest.raises(checkpointing.CheckpointError, match="has no steps"):
    checkpointing.load(path, step=3)
  with pytest.raises(checkpointing.SourceNotFoundError,
                     match="no such weights or checkpoint"):
    checkpointing.load(str(tmp_path / "missing"))


def test_a_read_only_load_installs_no_process_wide_hook(tmp_path):
  """Only the commands that write checkpoints silence asynchronous errors;
  ``load`` (predict, export) leaves ``sys.unraisablehook`` alone."""
  script = f"""
import sys
import numpy as np
from fcn_jax import checkpointing, models
from fcn_jax.data import preprocessing
spec = models.ModelSpec("fcn32s", 3, width_divisor=64)
shapes = models.param_shapes(spec.create())
params = {{k: {{n: np.zeros(s.shape, np.float32) for n, s in v.items()}}
          for k, v in shapes.items()}}
path = checkpointing.save_weights({str(tmp_path / 'w')!r}, params,
    checkpointing.make_metadata(spec, preprocessing.CAFFE_VGG))
checkpointing.load(path)
assert sys.unraisablehook is sys.__unraisablehook__, sys.unraisablehook
from fcn_jax import logging_utils
logging_utils.quiet_async_errors()
assert sys.unraisablehook is not sys.__unraisablehook__
print("ok")
"""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


def _unretrieved_task_error(filename):
  """Has asyncio report a task that failed with a full disk, in code from
  ``filename``, and whose exception nobody read (collected at once)."""
  code = compile("async def write():\n  raise OSError(28, 'No space left')\n",
                 filename, "exec")
  namespace = {}
  exec(code, namespace)  # pylint: disable=exec-used
  loop = asyncio.new_event_loop()
  try:
    task = loop.create_task(namespace["write"]())
    loop.run_until_complete(asyncio.sleep(0))
    assert task.done()
    del task
    gc.collect()
  finally:
    loop.close()


def test_a_failed_saves_unread_orbax_tasks_stay_out_of_the_console(caplog):
  """The other writes of a save that filled the disk: asyncio would print
  each one's traceback after the one-line error (seen on a full tmpfs)."""
  logging_utils.quiet_async_errors()
  caplog.set_level(logging.DEBUG)
  _unretrieved_task_error(os.path.join(os.sep, "site-packages", "orbax",
                                       "checkpoint", "writer.py"))
  assert not [r for r in caplog.records
             if r.name == "asyncio" and r.levelno >= logging.WARNING]
  # Anyone else's unread task error is still reported.
  _unretrieved_task_error(os.path.join(os.sep, "somewhere", "mine.py"))
  reported = [r for r in caplog.records
              if r.name == "asyncio" and r.levelno >= logging.WARNING]
  assert len(reported) == 1 and reported[0].levelno == logging.ERROR
  assert "Task exception was never retrieved" in reported[0].getMessage()


# --------------------------------------------------------------------------
# Training checkpoints: the step choice and damage set-aside.
# --------------------------------------------------------------------------


def _save(checkpointer, step, mean_iu=None):
  params = _params(_SPEC)
  state = {"params": params, "opt_state": {}, "step": np.int32(step),
           "rng": np.zeros(2, np.uint32)}
  checkpointer.save(step, state, metadata=checkpointing.make_metadata(
      _SPEC, preprocessing.CAFFE_VGG, step=step),
                    metrics=None if mean_iu is None else {"mean_iu": mean_iu})
  checkpointer.wait()


def test_the_step_rule_picks_best_latest_or_a_number(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=4)
  try:
    with pytest.raises(checkpointing.CheckpointError, match="no checkpoint"):
      checkpointer.select("best")
    _save(checkpointer, 1)
    assert checkpointer.select("best") == (
        1, "the latest of 1; none has been evaluated")
    _save(checkpointer, 2, mean_iu=0.5)
    _save(checkpointer, 3, mean_iu=0.7)
    _save(checkpointer, 4, mean_iu=0.6)
    assert checkpointer.select("best")[0] == 3
    assert "70.00%" in checkpointer.select("best")[1]
    assert checkpointer.select("latest")[0] == 4
    assert checkpointer.select("2") == (2, "as requested")
    with pytest.raises(checkpointing.CheckpointError, match=r"no step 9; it "
                       r"has \[1, 2, 3, 4\]"):
      checkpointer.select(9)
  finally:
    checkpointer.close()
  assert checkpointing.load(str(tmp_path)).step == 3
  assert checkpointing.load(str(tmp_path), "latest").step == 4


def _wrapped_enospc():
  try:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  except OSError as e:
    try:
      raise RuntimeError("a background write failed") from e
    except RuntimeError as wrapped:
      return wrapped


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # Python's own write.
    _wrapped_enospc(),  # An OSError inside a library's error.
    ValueError("Error writing \"params/x/0.0\": NOT_FOUND: Error writing "
               "local file \"/w/checkpoints/6/params/x/0.0\": No space left "
               "on device [os_error_code='28'] [source locations='...']"),
], ids=["oserror", "wrapped", "tensorstore"])
def test_a_failed_save_names_the_os_error_however_it_comes(tmp_path,
                                                          failure):
  """Which write meets a full disk first varies between runs; the line
  the user reads does not."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
  try:
    _save(checkpointer, 2)

    def fail(*args, **kwargs):
      raise failure
    checkpointer._manager.save = fail  # pylint: disable=protected-access
    with pytest.raises(checkpointing.CheckpointSaveError) as error:
      _save(checkpointer, 4)
  finally:
    del checkpointer._manager.save  # pylint: disable=protected-access
    checkpointer.close()
  assert str(error.value) == (
      f"could not save the checkpoint of step 4 in {tmp_path / 'checkpoints'} "
      "(No space left on device); the earlier checkpoints are intact (steps "
      "2): free space or fix the file system, then rerun the same command to "
      "resume from step 2")


# Orbax's asyncio threads report the failed reads once more when their event
# loop closes (a command silences that: logging_utils.quiet_async_errors).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_step_reads_as_one_line_and_is_set_aside(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
  try:
    _save(checkpointer, 1)
    _save(checkpointer, 2)
    data = pathlib.Path(checkpointer.step_directory(2)) / "params" / "d"
    for path in data.iterdir():  # Truncated, as a full disk leaves them.
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(checkpointing.DamagedCheckpointError) as info:
      checkpointer.restore_params(2)
    assert "\n" not in str(info.value)
    assert info.value.directory == checkpointer.step_directory(2)
    first = checkpointer.set_aside(2)
    assert first == checkpointer.step_directory(2) + ".corrupt"
    assert checkpointer.all_steps() == [1]
    _save(checkpointer, 2)  # Damaged again: a second name, nothing lost.
    second = checkpointer.set_aside(2, checkpointing.DIVERGED_SUFFIX)
    assert second.endswith("2.diverged")
    _save(checkpointer, 2)
    assert checkpointer.set_aside(2).endswith("2.corrupt.1")
    assert os.path.isdir(first) and os.path.isdir(second)
    assert checkpointer.all_steps() == [1]
  finally:
    checkpointer.close()


# --------------------------------------------------------------------------
# The data iterator's position across process counts.
# --------------------------------------------------------------------------


def _positions(folder, count, states):
  folder.mkdir(parents=True, exist_ok=True)
  for k, state in enumerate(states):
    (folder / f"process_{k}-of-{count}.json").write_text(json.dumps(state))


def test_the_iterator_position_moves_to_another_process_count(tmp_path):
  folder = tmp_path / "data_iter"
  _positions(folder, 2, [{"next": 8}, {"next": 8}])
  assert iterator_state.position_for(str(folder), 1, 2) is None  # grain's.
  assert iterator_state.position_for(str(folder), 0, 1) == {"next": 8}
  assert iterator_state.position_for(str(folder), 2, 4) == {"next": 8}
  (folder / "process_1-of-2.json").write_text(json.dumps({"next": 9}))
  with pytest.raises(iterator_state.DisagreeingPositionsError,
                     match="only with 2 processes"):
    iterator_state.position_for(str(folder), 0, 1)
  (folder / "process_1-of-2.json").unlink()
  with pytest.raises(iterator_state.MissingPositionError,
                     match=r"processes \[0\] of 2"):
    iterator_state.position_for(str(folder), 0, 1)
  with pytest.raises(iterator_state.MissingPositionError, match="no "):
    iterator_state.position_for(str(tmp_path / "none"), 0, 1)


# --------------------------------------------------------------------------
# The workdir lock.
# --------------------------------------------------------------------------


def _dead_pid():
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  return dead.pid


def _age(path, seconds):
  old = time.time() - seconds
  os.utime(path, (old, old))


def test_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
  lock_path = tmp_path / workdir_lock.LOCK_FILE
  pid = _dead_pid()
  lock_path.write_text(json.dumps({"command": "a killed run", "pid": pid,
                                   "host": socket.gethostname()}))
  with workdir_lock.WorkdirLock(str(tmp_path), "this run") as lock:
    assert lock.held
    assert json.loads(lock_path.read_text())["command"] == "this run"
  assert f"process {pid} no longer runs" in caplog.text
  assert not lock_path.exists()
  assert sorted(os.listdir(tmp_path)) == []  # No temporary or mutex file.


@pytest.mark.parametrize("content", [b"", b'{"command": "a run", "pi',
                                     b"\x00\x00\x00", b"[1, 2]"])
def test_an_unreadable_lock_is_taken_over_by_age(tmp_path, content, caplog):
  """An empty or non-JSON lock (a full disk at its creation) is refused while
  recent and taken over once as old as a dead holder's."""
  lock_path = tmp_path / workdir_lock.LOCK_FILE
  lock_path.write_bytes(content)
  with pytest.raises(workdir_lock.WorkdirLockedError) as info:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  message = str(info.value)
  assert "\n" not in message
  assert f"locked by {lock_path}, which is unreadable" in message
  assert f"delete {lock_path}" in message
  assert lock_path.read_bytes() == content  # Untouched.
  _age(lock_path, workdir_lock.LOCK_STALE_AFTER_S - 60)
  with pytest.raises(workdir_lock.WorkdirLockedError):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  _age(lock_path, workdir_lock.LOCK_STALE_AFTER_S + 60)
  with workdir_lock.WorkdirLock(str(tmp_path), "this run"):
    assert json.loads(lock_path.read_text())["command"] == "this run"
  assert "Took over the stale lock" in caplog.text
  assert "it is unreadable (empty or not JSON" in caplog.text
  assert not lock_path.exists()


def test_a_live_lock_is_kept_and_release_leaves_anothers_lock(tmp_path):
  lock_path = tmp_path / workdir_lock.LOCK_FILE
  first = workdir_lock.WorkdirLock(str(tmp_path), "the first run").acquire()
  second = workdir_lock.WorkdirLock(str(tmp_path), "the second run",
                                    if_held="pass --output DIR")
  with pytest.raises(workdir_lock.WorkdirLockedError,
                     match=r"in use by the first run \(PID .*: pass --output "
                     "DIR"):
    second.acquire()
  second.release()  # Never held: leaves the first's lock.
  assert json.loads(lock_path.read_text())["command"] == "the first run"
  first.release()
  first.release()  # Idempotent.
  assert not lock_path.exists()


class _ShortWait(workdir_lock.WorkdirLock):
  """Gives up waiting for the mutex after 0.3 s instead of MUTEX_WAIT_S."""

  def _take_mutex(self, wait_s=0.3):
    return super()._take_mutex(wait_s=min(wait_s, 0.3))


def test_a_left_mutex_is_removed_by_age(tmp_path, caplog):
  """A run killed during a take-over leaves ``workdir.lock.takeover``; it
  does not block the workdir for longer than MUTEX_STALE_AFTER_S."""
  mutex = tmp_path / (workdir_lock.LOCK_FILE + workdir_lock.MUTEX_SUFFIX)
  mutex.write_bytes(b"")
  with pytest.raises(workdir_lock.WorkdirLockedError, match="taking the lock"):
    _ShortWait(str(tmp_path)).acquire()
  _age(mutex, workdir_lock.MUTEX_STALE_AFTER_S + 5)
  with workdir_lock.WorkdirLock(str(tmp_path)):
    pass
  assert "left by a run killed while it took the lock" in caplog.text
  assert sorted(os.listdir(tmp_path)) == []


def _race_worker(directory, trials, barrier, results):
  for trial in range(trials):
    barrier.wait()  # The parent has laid a stale lock.
    lock = workdir_lock.WorkdirLock(directory, f"racer {os.getpid()}")
    try:
      lock.acquire()
      won = True
    except workdir_lock.WorkdirLockedError:
      won = False
    results.put((trial, os.getpid(), won))
    barrier.wait()  # All have tried; a winner still holds the lock.
    barrier.wait()  # The parent has checked.
    lock.release()
    barrier.wait()  # Released: the parent lays the next stale lock.


def test_one_winner_when_many_processes_take_over_one_stale_lock(tmp_path):
  """8 processes at once, 24 times (a dead holder's lock, or an old
  unreadable one): exactly one takes it each time, and it is the one the
  lock file names."""
  processes, trials = 8, 24
  context = multiprocessing.get_context("spawn")
  barrier = context.Barrier(processes + 1, timeout=240)
  results = context.Queue()
  workers = [context.Process(target=_race_worker,
                             args=(str(tmp_path), trials, barrier, results))
             for _ in range(processes)]
  for worker in workers:
    worker.start()
  lock_path = tmp_path / workdir_lock.LOCK_FILE
  dead = _dead_pid()
  winners = []
  try:
    for trial in range(trials):
      if trial % 2:
        lock_path.write_bytes(b"")
        _age(lock_path, workdir_lock.LOCK_STALE_AFTER_S + 60)
      else:
        lock_path.write_text(json.dumps({
            "command": "a killed run", "pid": dead,
            "host": socket.gethostname()}))
      barrier.wait()
      barrier.wait()
      outcomes = [results.get(timeout=60) for _ in range(processes)]
      won = [pid for t, pid, w in outcomes if w and t == trial]
      holder = json.loads(lock_path.read_text())
      winners.append((won, holder["pid"]))
      barrier.wait()
      barrier.wait()
  finally:
    for worker in workers:
      worker.join(timeout=60)
      if worker.is_alive():
        worker.kill()
  wrong = [(trial, won) for trial, (won, _) in enumerate(winners)
           if len(won) != 1]
  assert not wrong, (f"{len(wrong)} of {trials} trials had another number "
                     f"of winners than 1: {wrong}")
  assert all(won == [pid] for won, pid in winners), winners
  assert sorted(os.listdir(tmp_path)) == []
