"""Nothing lost, nothing poisoned: damaged checkpoints, resuming with another
model, divergence, dataset/model class counts, replayed metrics and SIGTERM
during start-up, on the tiny quickstart (FCN-32s / 64, 32 px crops, a
checkpoint every 2 steps) on ``synthetic_shapes/tiny``."""

import errno
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from fcn_jax import checkpointing
from fcn_jax import datasets
from fcn_jax import errors
from fcn_jax.data import data_sources
from fcn_jax.datasets import common
from fcn_jax import default_config
from fcn_jax.data import input_pipeline
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax.data import preprocessing
from fcn_jax.evaluation import evaluator
from fcn_jax.training import loop
from fcn_jax import run_config
from tests import helpers
from tests.tiny_fcn import random_variables

# Orbax's asyncio threads report the failed reads of damaged checkpoints
# once more when their event loop closes; the errors themselves are tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 4  # Checkpoints 2 and 4.


def _config(data_dir, num_train_steps=NUM_STEPS, **optim):
  config = default_config.get_config()
  config.mode = "train"
  # The net is not the subject here: FCN-AlexNet compiles quickest.
  config.model.name = "fcn_alexnet"
  config.model.width_divisor = 64
  config.model.dropout_rate = 0.0
  config.dataset.name = "synthetic_shapes/tiny"
  config.dataset.data_dir = str(data_dir)
  config.dataset.train_split = "synthetic_train"
  config.dataset.eval_split = "synthetic_val"
  config.preprocessing = "torchvision"
  config.batch_size = 4
  config.eval_batch_size = 2
  config.num_train_steps = num_train_steps
  config.log_every_steps = 1
  config.checkpoint.every_steps = 2
  config.input.train_mode = "epochs"
  config.input.crop_size = 32
  config.input.eval_pad_size = 48
  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-2
  config.optim.momentum = 0.9
  for key, value in optim.items():
    setattr(config.optim, key, value)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 4-step run: checkpoints 2 and 4, and its final parameters."""
  root = tmp_path_factory.mktemp("robust")
  data_dir = root / "tfds"
  workdir = root / "run"
  state = loop.train_and_evaluate(_config(data_dir), str(workdir))
  return dict(data_dir=data_dir, workdir=workdir,
              params=parallel.to_host(state.params))


def _copy(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained["workdir"], workdir)
  return workdir


def _steps(workdir):
  checkpointer = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    return checkpointer.all_steps()
  finally:
    checkpointer.close()


def _train_records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == "train"]


def _template(config):
  """A restore target: the train state training builds, random values."""
  run = run_config.resolve(config, "train")
  model = run.spec.create()
  params = random_variables(model)["params"]
  return loop.new_train_state(run, model, params, jax.random.PRNGKey(1))[0]


# --------------------------------------------------------------------------
# Damaged checkpoints.
# --------------------------------------------------------------------------


def _truncate_a_params_file(step_dir):
  data = sorted(glob.glob(str(step_dir / "params" / "d" / "*")))[0]
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


def _delete_a_params_file(step_dir):
  os.remove(sorted(glob.glob(str(step_dir / "params" / "d" / "*")))[0])


def _garbage_metadata(step_dir):
  (step_dir / "params" / "_METADATA").write_text("{garbage")


def _garbage_run_metadata(step_dir):
  for path in (step_dir / "metadata").iterdir():
    path.write_text("not JSON")


def _delete_train_state(step_dir):
  shutil.rmtree(step_dir / "train_state")


def _delete_params(step_dir):
  shutil.rmtree(step_dir / "params")


def _empty_directory(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


DAMAGES = [_truncate_a_params_file, _delete_a_params_file, _garbage_metadata,
           _garbage_run_metadata, _delete_train_state, _delete_params,
           _empty_directory]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__[1:])
def test_resume_sets_a_damaged_latest_checkpoint_aside(trained, tmp_path,
                                                        damage):
  workdir = _copy(trained, tmp_path)
  damage(workdir / "checkpoints" / "4")
  config = _config(trained["data_dir"])
  checkpointer = checkpointing.Checkpointer(str(workdir))
  try:
    resumed = loop._resume(run_config.resolve(config, "train"), checkpointer,
                           lambda: _template(config))
    assert checkpointer.all_steps() == [2]
  finally:
    checkpointer.close()
  assert resumed.step == 2 and int(resumed.state.step) == 2
  assert (workdir / "checkpoints" / "4.corrupt").is_dir()  # Nothing deleted.
  assert not (workdir / "checkpoints" / "4").exists()

  # predict/evaluate on the damaged step: one line naming it and the fix
  # (they read only the parameters and metadata).
  (workdir / "checkpoints" / "4.corrupt").rename(workdir / "checkpoints" / "4")
  if damage is _delete_train_state:
    assert checkpointing.load(str(workdir), "latest").step == 4
    return
  with pytest.raises(checkpointing.CheckpointError) as error:
    checkpointing.load(str(workdir), "latest")
  message = str(error.value)
  assert str(workdir / "checkpoints" / "4") in message
  assert "--step" in message and "2" in message and "\n" not in message


def test_no_intact_checkpoint_is_one_line_and_moves_nothing(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _delete_params(workdir / "checkpoints" / "4")
  _empty_directory(workdir / "checkpoints" / "2")
  config = _config(trained["data_dir"])
  checkpointer = checkpointing.Checkpointer(str(workdir))
  try:
    with pytest.raises(checkpointing.CheckpointError,
                       match="no intact checkpoint in") as error:
      loop._resume(run_config.resolve(config, "train"), checkpointer,
                   lambda: _template(config))
  finally:
    checkpointer.close()
  message = str(error.value)
  assert str(workdir / "checkpoints") in message and "\n" not in message
  assert "step 4:" in message and "step 2:" in message
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


def test_resume_sets_a_non_finite_checkpoint_aside(trained, tmp_path):
  """One saved before these checks (or with bits flipped on disk)."""
  config = _config(trained["data_dir"])
  template = parallel.to_host(_template(config).to_dict())
  source = checkpointing.Checkpointer(str(trained["workdir"]), read_only=True)
  target = checkpointing.Checkpointer(str(tmp_path / "run"), keep_best=0)
  run = run_config.resolve(config, "train")
  try:
    for step in (2, 4):
      data_iter = input_pipeline.create_train_iterator(
          run, preprocessing.TORCHVISION)
      state, metadata = source.restore(step, template, data_iterator=data_iter)
      if step == 4:
        state["params"]["fc6"]["kernel"].flat[7] = np.inf
      target.save(step, state, metadata=metadata, data_iterator=data_iter)
      target.wait()
    resumed = loop._resume(run, target,
                           lambda: _template(config))
    assert target.all_steps() == [2]
  finally:
    source.close()
    target.close()
  assert resumed.step == 2
  assert (tmp_path / "run" / "checkpoints" / "4.diverged").is_dir()


def test_resume_past_damage_equals_the_uninterrupted_run(trained, tmp_path,
                                                         monkeypatch):
  workdir = _copy(trained, tmp_path)
  _truncate_a_params_file(workdir / "checkpoints" / "4")
  # Real class names of the dataset go into the metadata (here: made up, so
  # that they differ from the VOC default).
  names = [f"thing_{i}" for i in range(21)]
  monkeypatch.setattr(datasets, "dataset_classes",
                      lambda *args: (len(names), names))
  state = loop.train_and_evaluate(_config(trained["data_dir"]), str(workdir))
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(parallel.to_host(state.params)),
      jax.tree_util.tree_leaves(trained["params"])):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert _steps(workdir) == [2, 4]
  assert (workdir / "checkpoints" / "4.corrupt").is_dir()
  # Steps 3 and 4 were replayed: each appears once.
  assert [r["step"] for r in _train_records(workdir)] == [1, 2, 3, 4]
  assert json.loads((workdir / "config.json").read_text())[
      "class_names"] == names
  assert checkpointing.load(str(workdir)).class_names == names


# --------------------------------------------------------------------------
# Another model, another dataset.
# --------------------------------------------------------------------------


def test_resume_with_another_model_fails_before_writing(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  config = _config(trained["data_dir"], num_train_steps=6)
  config.model.width_divisor = 32
  with pytest.raises(ValueError) as error:
    loop.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert "config.model.width_divisor=32 (the checkpoint has 64)" in message
  assert "config.json" in message and "--config.init_from" in message
  assert "\n" not in message
  after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  assert after == before  # config.json, metrics, checkpoints untouched.


def test_model_and_dataset_class_counts_must_match(trained, tmp_path):
  config = _config(trained["data_dir"])
  config.model.num_classes = 5
  with pytest.raises(ValueError, match=r"config.model.num_classes=5, but the "
                     r"dataset synthetic_shapes/tiny has 21 classes.*labels "
                     r"5..20 would be ignored.*num_classes=21"):
    loop.train_and_evaluate(config, str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()

  # Evaluating a 5-class model on 21-class data.
  spec = models.ModelSpec("fcn32s", 5, width_divisor=64)
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                        models.param_shapes(spec.create()))
  checkpointing.save_weights(
      str(tmp_path / "five"), params,
      checkpointing.make_metadata(spec, preprocessing.TORCHVISION))
  with pytest.raises(ValueError, match=r"five has num_classes=5, but the "
                     r"dataset synthetic_shapes/tiny has 21"):
    evaluator.load_checkpoint(_config(trained["data_dir"]),
                              str(tmp_path / "five"))


def test_dataset_class_names_come_from_the_builder(tmp_path):
  nyud = data_sources.dataset_class_names("nyud", str(tmp_path))
  assert len(nyud) == 40 and nyud[:3] == ["wall", "floor", "cabinet"]
  assert data_sources.dataset_class_names("no_such", str(tmp_path)) is None


# --------------------------------------------------------------------------
# Divergence.
# --------------------------------------------------------------------------


def test_a_non_finite_state_is_never_saved(trained, tmp_path):
  config = _config(trained["data_dir"], num_train_steps=3,
                   loss_normalization="sum", base_lr=1e38, warmup_steps=0)
  config.checkpoint.every_steps = 1
  workdir = tmp_path / "diverged"
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"The train state after step 1 holds NaN or "
                     r"infinite values in \d+ of \d+ arrays.*no checkpoint "
                     r"is left"):
    loop.train_and_evaluate(config, str(workdir))
  assert _steps(workdir) == []
  assert os.listdir(workdir / "checkpoints") == []


def test_a_huge_rate_after_a_good_start_keeps_the_good_checkpoint(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  # The first update makes the parameters huge but finite (it is saved: every
  # step is), the loss of the next step, computed from them, is not.
  config = _config(trained["data_dir"], num_train_steps=8, base_lr=1e30)
  config.checkpoint.every_steps = 1
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert "loss became nan at step 6" in message.lower(), message
  assert re.search(r"checkpoint of step 5, which leads to it, is set aside as "
                   r"\S+/checkpoints/5\.diverged;", message), message
  assert (f"the newest good checkpoint is {workdir / 'checkpoints' / '4'}"
          in message)
  assert _steps(workdir) == [4]

  # A normal rerun resumes from step 4 and stays finite.
  state = loop.train_and_evaluate(
      _config(trained["data_dir"], num_train_steps=6), str(workdir))
  assert int(state.step) == 6
  assert not checkpointing.non_finite_leaves(parallel.to_host(state.params))
  records = _train_records(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) for r in records)


# --------------------------------------------------------------------------
# SIGTERM during start-up (the real CLI in a subprocess).
# --------------------------------------------------------------------------


def test_sigterm_during_start_up_exits_cleanly(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(
      [sys.executable, "-m", "fcn_jax.main",
       "--config", str(REPO / "configs" / "quickstart.py"),
       "--workdir", str(workdir), "--config.mode=train",
       "--config.model.name=fcn_alexnet", "--config.model.width_divisor=64",
       "--config.dataset.name=synthetic_shapes/tiny",
       f"--config.dataset.data_dir={trained['data_dir']}",
       "--config.num_train_steps=6", "--config.batch_size=4",
       "--config.input.crop_size=32", "--config.optim.base_lr=1e-2",
       "--config.optim.schedule=fixed", "--config.optim.warmup_steps=0",
       "--config.optim.weight_decay=5e-4", "--config.log_every_steps=1",
       "--config.checkpoint.every_steps=2"],
      cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
  log = []
  try:
    for line in proc.stderr:
      log.append(line)
      if "Resumed from" in line:
        proc.send_signal(signal.SIGTERM)
        break
    log.extend(proc.stderr)
    code = proc.wait(timeout=300)
  finally:
    proc.kill()
  text = "".join(log)
  assert "Resumed from" in text, text[-3000:]
  assert code == 0, text[-3000:]
  assert "Traceback" not in text
  # Either it stopped before the first step, or it ran one and saved it.
  steps = _steps(workdir)
  if "Preempted during start-up" in text:
    assert steps == [2, 4]
  else:
    assert "Preempted: saved step 5" in text and steps[-1] == 5


# --------------------------------------------------------------------------
# One writer per workdir.
# --------------------------------------------------------------------------


def _files(workdir):
  return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


def test_a_second_training_on_a_held_workdir_is_refused_before_writing(
    trained, tmp_path, capsys):
  from fcn_jax import cli
  workdir = _copy(trained, tmp_path)
  holder = checkpointing.WorkdirLock(str(workdir), "the first run").acquire()
  try:
    before = _files(workdir)
    config = _config(trained["data_dir"], num_train_steps=6)
    with pytest.raises(SystemExit) as exit_info:
      cli.run_reporting_errors(loop.run, config, str(workdir))
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1, message
    assert f"the workdir {workdir} is in use by the first run (PID " in message
    assert f"{os.getpid()} on host " in message
    assert _files(workdir) == before  # Nothing written, nothing replaced.
    config.mode = "eval"  # Evaluating into the workdir: refused as well.
    with pytest.raises(checkpointing.WorkdirLockedError):
      loop.run(config, str(workdir))
    # A config mistake is named first: checked before the lock is tried.
    config.eval.exclude_classes = ("unicorn",)
    with pytest.raises(errors.UserError, match="no class 'unicorn'"):
      loop.run(config, str(workdir))
  finally:
    holder.release()
  assert not (workdir / checkpointing.LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_and_every_exit_releases_it(
    trained, tmp_path, monkeypatch, caplog):
  workdir = _copy(trained, tmp_path)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()  # Its PID no longer runs.
  lock_path = workdir / checkpointing.LOCK_FILE
  lock_path.write_text(json.dumps({
      "command": "a killed run", "host": __import__("socket").gethostname(),
      "pid": dead.pid, "since": "earlier"}))

  def broken(*args, **kwargs):
    raise RuntimeError("an error after the start")
  monkeypatch.setattr(loop, "_resume", broken)
  with pytest.raises(RuntimeError, match="an error after the start"):
    loop.train_and_evaluate(_config(trained["data_dir"], num_train_steps=6),
                            str(workdir))
  assert f"Took over the stale lock {lock_path} of a killed run" in caplog.text
  assert f"process {dead.pid} no longer runs" in caplog.text
  assert not lock_path.exists()  # Released on the exception.


def test_a_lock_of_another_host_is_stale_only_when_no_longer_refreshed(
    tmp_path):
  lock_path = tmp_path / checkpointing.LOCK_FILE
  lock_path.write_text(json.dumps({"command": "a run elsewhere",
                                   "host": "another-host", "pid": 1}))
  with pytest.raises(checkpointing.WorkdirLockedError,
                     match="in use by a run elsewhere .PID 1 on host "
                     "another-host"):
    checkpointing.WorkdirLock(str(tmp_path)).acquire()
  old = os.path.getmtime(lock_path) - checkpointing.LOCK_STALE_AFTER_S - 60
  os.utime(lock_path, (old, old))
  with checkpointing.WorkdirLock(str(tmp_path), "this run"):
    assert json.loads(lock_path.read_text())["command"] == "this run"
  assert not lock_path.exists()


def test_sigterm_during_start_up_stops_at_the_next_safe_point(
    trained, tmp_path, monkeypatch):
  """In-process: the SIGTERM arrives while the checkpoints are listed, and
  nothing after that (reading them, building the input pipeline, compiling)
  runs."""
  workdir = _copy(trained, tmp_path)
  real = checkpointing.Checkpointer.all_steps

  def all_steps_then_sigterm(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(self)

  def must_not_run(*args, **kwargs):
    raise AssertionError("the start-up went on after the SIGTERM")
  monkeypatch.setattr(checkpointing.Checkpointer, "all_steps",
                      all_steps_then_sigterm)
  monkeypatch.setattr(loop, "_resume", must_not_run)
  monkeypatch.setattr(input_pipeline, "create_train_iterator", must_not_run)
  assert loop.train_and_evaluate(_config(trained["data_dir"], 6),
                                 str(workdir)) is None
  monkeypatch.undo()
  assert _steps(workdir) == [2, 4]
  assert not (workdir / checkpointing.LOCK_FILE).exists()
  assert signal.getsignal(signal.SIGTERM) is not None  # Handler restored.


# --------------------------------------------------------------------------
# Damaged prepared datasets.
# --------------------------------------------------------------------------


def _shard(data_dir, split="synthetic_train"):
  (path,) = glob.glob(str(data_dir / "synthetic_shapes" / "tiny" / "1.0.0" /
                          f"synthetic_shapes-{split}.array_record-*"))
  return path


def _damaged_data(trained, tmp_path):
  data_dir = tmp_path / "tfds"
  shutil.copytree(trained["data_dir"], data_dir)
  return data_dir


def test_a_truncated_dataset_shard_is_named_at_start(trained, tmp_path):
  data_dir = _damaged_data(trained, tmp_path)
  shard = _shard(data_dir)
  os.truncate(shard, os.path.getsize(shard) // 2)
  with pytest.raises(data_sources.DamagedDatasetError) as error:
    loop.train_and_evaluate(_config(data_dir), str(tmp_path / "run"))
  message = str(error.value)
  assert "\n" not in message
  assert ("the prepared dataset synthetic_shapes/tiny (split "
          f"synthetic_train) is damaged: {shard} cannot be read") in message
  assert f"delete {os.path.dirname(shard)}" in message
  assert not (tmp_path / "run").exists()  # Checked before anything written.


def test_a_damaged_record_met_mid_run_stops_with_the_checkpoints_intact(
    trained, tmp_path, monkeypatch):
  # The start-up reads every record of this tiny split (the crop check) and
  # would find the damage before step 1; a larger split, or a disk going
  # bad, meets it mid-run.
  monkeypatch.setattr(input_pipeline, "check_image_sizes",
                      lambda *args, **kwargs: None)
  data_dir = _damaged_data(trained, tmp_path)
  shard = _shard(data_dir)
  with open(shard, "r+b") as f:  # Inside record 4's chunk: the shard's
    f.seek(8000)                 # index still reads, record 4 does not.
    f.write(b"\0" * 100)
  workdir = _copy(trained, tmp_path)
  before = _files(workdir / "checkpoints")
  config = _config(data_dir, num_train_steps=8)  # Steps 5..8: a new epoch.
  with pytest.raises(data_sources.DamagedDatasetError) as error:
    loop.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert "\n" not in message and f"{shard} cannot be read" in message
  assert "Corrupted Riegeli/records file" in message
  assert _files(workdir / "checkpoints") == before
  assert not (workdir / checkpointing.LOCK_FILE).exists()


def test_an_interrupted_prepare_data_is_named(tmp_path, caplog):
  version_dir = tmp_path / "voc_seg" / "1.0.0"
  leftover = tmp_path / "voc_seg" / "incomplete.AB12CD_1.0.0"
  leftover.mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as error:
    data_sources.open_split("voc_seg", "train", str(tmp_path))
  message = str(error.value)
  assert f"an interrupted prepare_data left {leftover}: delete it" in message
  assert "python -m fcn_jax.prepare_data --dataset voc_seg" in message
  assert not version_dir.exists()


# --------------------------------------------------------------------------
# Start-up checks.
# --------------------------------------------------------------------------


def test_num_train_steps_0_is_refused_in_words(trained, tmp_path):
  with pytest.raises(ValueError, match="config.num_train_steps=0: nothing "
                     "to train"):
    loop.train_and_evaluate(_config(trained["data_dir"], 0),
                            str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_small_eval_pad_size_is_found_before_step_1(trained, tmp_path):
  config = _config(trained["data_dir"])
  config.mode = "train_and_eval"
  config.input.eval_pad_size = 40  # synthetic_shapes/tiny: up to 48 px.
  # The largest image, read independently of the check.
  split = data_sources.open_split("synthetic_shapes/tiny", "synthetic_val",
                                  str(trained["data_dir"]))
  largest = max(max(common.decode_mask(r[common.MASK]).shape)
                for r in split.records)
  with pytest.raises(errors.UserError, match=(
      rf"config.input.eval_pad_size=40 is smaller than image "
      rf"synthetic_val_\d+ \(\d+x\d+\) of synthetic_shapes/tiny:synthetic_val;"
      rf" set it to at least {largest}")):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_crop_far_larger_than_every_image_is_warned_about(trained, caplog):
  config = _config(trained["data_dir"])
  config.input.crop_size = 4096
  run = helpers.resolved(config)  # A dry run: no check of the sizes.
  input_pipeline.check_image_sizes(run.input, run.dataset, evaluate=False)
  assert ("config.input.crop_size=4096 is larger than every training image"
          in caplog.text)
  assert "at least 99.9% of every crop is padding" in caplog.text
  caplog.clear()
  config.input.crop_size = 32
  run = helpers.resolved(config)
  input_pipeline.check_image_sizes(run.input, run.dataset, evaluate=False)
  assert "crop_size" not in caplog.text


# --------------------------------------------------------------------------
# Only the diagnosis reaches the console (the real CLI in a subprocess).
# --------------------------------------------------------------------------

def _cli_env():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return env


def _the_error(stderr, code, expected_code=2):
  """The one ``error:`` line of a command that exited with
  ``expected_code``, with no traceback."""
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert code == expected_code, stderr[-3000:]
  assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
  return lines[0]


def _main_flags(trained, num_train_steps, every_steps):
  """``python -m fcn_jax.main``'s flags for the ``trained`` run's model."""
  return ["--config", str(REPO / "configs" / "quickstart.py"),
          "--config.mode=train",
          "--config.model.name=fcn_alexnet", "--config.model.width_divisor=64",
          "--config.model.dropout_rate=0",
          "--config.dataset.name=synthetic_shapes/tiny",
          f"--config.dataset.data_dir={trained['data_dir']}",
          f"--config.num_train_steps={num_train_steps}",
          "--config.batch_size=4", "--config.input.crop_size=32",
          "--config.preprocessing=torchvision",
          "--config.optim.loss_normalization=valid",
          f"--config.checkpoint.every_steps={every_steps}"]


_FILE_SIZE_LIMIT = r"""
import resource, runpy, signal, sys
# A disk that fills up: writing past 24 KiB into one file fails (EFBIG).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (24 * 1024, 24 * 1024))
sys.argv[0] = "fcn_jax.main"
runpy.run_module("fcn_jax.main", run_name="__main__")
"""


def test_a_damaged_checkpoint_and_a_failed_save_print_one_line(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _truncate_a_params_file(workdir / "checkpoints" / "4")
  script = tmp_path / "limited.py"
  script.write_text(_FILE_SIZE_LIMIT)
  result = subprocess.run(
      [sys.executable, str(script), "--workdir", str(workdir),
       *_main_flags(trained, 6, 2)],
      cwd=tmp_path, env=_cli_env(), capture_output=True, text=True,
      timeout=300)
  text = result.stdout + result.stderr
  assert result.returncode == 2, text[-3000:]
  # Step 4 was set aside (a warning), the save of step 4 failed (one line).
  assert "set it aside as" in text and "4.corrupt" in text, text[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, text[-3000:]
  assert errors[0].startswith(
      f"error: could not save the checkpoint of step 4 in "
      f"{workdir / 'checkpoints'} (File too large); the earlier checkpoints "
      "are intact (steps 2)"), errors[0]
  assert "Traceback" not in text and "Event loop is closed" not in text
  assert _steps(workdir) == [2]
  assert not (workdir / checkpointing.LOCK_FILE).exists()


# --------------------------------------------------------------------------
# Ctrl-C (the real CLI in a subprocess, SIGINT to its process group as a
# terminal sends it).
# --------------------------------------------------------------------------


def _start_training(trained, workdir, num_train_steps):
  return subprocess.Popen(
      [sys.executable, "-m", "fcn_jax.main",
       "--workdir", str(workdir), *_main_flags(trained, num_train_steps, 1000),
       "--config.log_every_steps=1"],
      cwd=workdir.parent, env=_cli_env(), stderr=subprocess.PIPE, text=True,
      start_new_session=True)


def _ctrl_c(proc, after_line, times):
  """Reads the log until ``after_line``, presses Ctrl-C, and again each time
  the previous one is acknowledged (two signals at once would count as
  one), ``times`` in all; returns ``(exit status, log)``."""
  log, pressed = [], 0
  try:
    for line in proc.stderr:
      log.append(line)
      if (after_line in line or "Ctrl-C: finishing" in line) and (
          pressed < times):
        os.killpg(proc.pid, signal.SIGINT)
        pressed += 1
      if pressed == times:
        break
    try:
      log.append(proc.communicate(timeout=300)[1])
    except subprocess.TimeoutExpired:
      log.append("\n[the training did not exit within 300 s of Ctrl-C]")
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  return proc.returncode, "".join(log)


def test_ctrl_c_saves_the_current_step_and_exits_cleanly(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  code, text = _ctrl_c(_start_training(trained, workdir, 40),
                       "step 6/40", times=1)
  assert code == 0, text[-3000:]
  assert "Traceback" not in text and "KeyboardInterrupt" not in text
  saved = re.search(r"Stopped by Ctrl-C: saved step (\d+); rerun the same "
                    r"command to resume\.", text)
  assert saved, text[-3000:]
  step = int(saved[1])
  assert 6 <= step < 40  # No periodic save: this one is the Ctrl-C's.
  assert _steps(workdir) == [4, step]
  assert not (workdir / checkpointing.LOCK_FILE).exists()
  # Resumable: the saved step restores in full (state and data position).
  config = _config(trained["data_dir"], num_train_steps=step + 1)
  config.checkpoint.every_steps = 1000
  state = loop.train_and_evaluate(config, str(workdir))
  assert int(state.step) == step + 1
  assert [r["step"] for r in _train_records(workdir)][-2:] == [step, step + 1]


def test_a_second_ctrl_c_exits_at_once(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  code, text = _ctrl_c(_start_training(trained, workdir, 40),
                       "step 6/40", times=2)
  assert code == 128 + signal.SIGINT, text[-3000:]
  assert "Traceback" not in text and "KeyboardInterrupt" not in text
  assert "Ctrl-C again: exiting now, without saving" in text, text[-3000:]
  assert not (workdir / checkpointing.LOCK_FILE).exists()
  assert 4 in _steps(workdir)  # Still resumable.


# --------------------------------------------------------------------------
# A full disk at an evaluation step (simulated ENOSPC).
# --------------------------------------------------------------------------

_ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _eval_config(trained):
  config = _config(trained["data_dir"], num_train_steps=6)
  config.mode = "train_and_eval"
  config.eval_every_steps = 6
  return config


def test_a_failing_writer_leaves_the_checkpoint_message_and_no_lock(
    trained, tmp_path, monkeypatch, capsys, caplog):
  """The save of step 6 fails and so does closing the TensorBoard writer
  (in a ``finally``), as on a full disk: the user reads the checkpoint's
  line, and the lock is released."""
  from fcn_jax import cli
  import orbax.checkpoint as ocp
  import tensorboardX
  workdir = _copy(trained, tmp_path)

  def full_disk(*args, **kwargs):
    raise _ENOSPC
  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  monkeypatch.setattr(tensorboardX.SummaryWriter, "close", full_disk)
  with pytest.raises(SystemExit) as exit_info:
    cli.run_reporting_errors(loop.train_and_evaluate, _eval_config(trained),
                             str(workdir))
  assert exit_info.value.code == 2
  message = capsys.readouterr().err
  assert message.count("\n") == 1, message
  assert message.startswith(
      f"error: could not save the checkpoint of step 6 in "
      f"{workdir / 'checkpoints'} (No space left on device); the earlier "
      "checkpoints are intact (steps 2, 4)"), message
  assert ("Could not close the metrics and TensorBoard writer either "
          "(MetricsWriteError: could not write the metrics in") in caplog.text
  assert not (workdir / checkpointing.LOCK_FILE).exists()
  monkeypatch.undo()
  assert _steps(workdir) == [2, 4]


def test_metrics_jsonl_never_ends_in_a_partial_line(trained, tmp_path,
                                                    monkeypatch, capsys):
  """The disk fills while the evaluation's line is appended: the part
  written is undone, the error names the metrics, the lock is released and
  the rerun resumes."""
  from fcn_jax import cli
  workdir = _copy(trained, tmp_path)
  metrics = workdir / "metrics.jsonl"
  real_write = os.write

  def short_write(fd, data):
    if (os.readlink(f"/proc/self/fd/{fd}") == str(metrics)
        and b'"split": "eval"' in data):
      return real_write(fd, data[:len(data) // 2])  # Then the disk is full.
    return real_write(fd, data)
  monkeypatch.setattr(os, "write", short_write)
  with pytest.raises(SystemExit):
    cli.run_reporting_errors(loop.train_and_evaluate, _eval_config(trained),
                             str(workdir))
  monkeypatch.undo()
  message = capsys.readouterr().err
  assert message.count("\n") == 1, message
  assert message.startswith(f"error: could not write the metrics in "
                            f"{workdir} (No space left on device)"), message
  text = metrics.read_text()
  assert text.endswith("\n")
  records = [json.loads(line) for line in text.splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"][-2:] == [5, 6]
  assert not [r for r in records if r["split"] == "eval"]
  assert not (workdir / checkpointing.LOCK_FILE).exists()
  assert _steps(workdir) == [2, 4]
  state = loop.train_and_evaluate(_eval_config(trained), str(workdir))
  assert int(state.step) == 6
  records = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [r["step"] for r in records if r["split"] == "eval"] == [6]


# --------------------------------------------------------------------------
# evaluate without --output writes into the workdir: not while it is held.
# --------------------------------------------------------------------------


def test_evaluate_into_a_held_workdir_is_refused(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  holder = checkpointing.WorkdirLock(str(workdir), "a training").acquire()
  try:
    result, mistake = [subprocess.run(
        [sys.executable, "-m", "fcn_jax.evaluate", "--checkpoint",
         str(workdir), *flags], cwd=tmp_path, env=_cli_env(),
        capture_output=True, text=True, timeout=300)
        for flags in ([], ["--split", "no_such_split"])]
  finally:
    holder.release()
  # A config mistake is named first: checked before the lock is tried.
  assert _the_error(mistake.stderr, mistake.returncode).startswith(
      "error: config.dataset.eval_split='no_such_split': "
      "synthetic_shapes/tiny has no such split")
  error = _the_error(result.stderr, result.returncode)
  assert f"the workdir {workdir} is in use by a training (PID " in error
  assert error.endswith("pass --output DIR to write the report elsewhere (if "
                        "that run is dead on another host, delete "
                        f"{workdir / 'workdir.lock'})")
  assert not (workdir / evaluator.EVAL_RESULTS_FILE).exists()
  assert not (workdir / evaluator.CONFUSION_FILE).exists()


# --------------------------------------------------------------------------
# A real full disk: a small tmpfs in a private mount namespace (unshare).
# --------------------------------------------------------------------------

_FULL_DISK = r"""
import json, os, shutil, subprocess, sys
disk, source, free_kib, argv = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                sys.argv[4:])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk],
               check=True)
workdir = os.path.join(disk, "run")
shutil.copytree(source, workdir)
stat = os.statvfs(disk)
with open(os.path.join(disk, "filler"), "wb") as f:
  f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free_kib * 1024))
run = subprocess.run([sys.executable, "-m", "fcn_jax.main", "--workdir",
                      workdir, *argv], capture_output=True, text=True)
from fcn_jax import checkpointing
checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
print(json.dumps({
    "code": run.returncode, "stderr": run.stderr, "workdir": workdir,
    "steps": checkpointer.all_steps(), "metrics": metrics,
    "lock": os.path.exists(os.path.join(workdir, "workdir.lock"))}))
"""


def _on_a_small_disk(trained, tmp_path, free_kib, *flags):
  """Runs the training CLI on a copy of the ``trained`` workdir on a 4 MiB
  tmpfs with ``free_kib`` KiB left; skips where no tmpfs can be mounted."""
  if not shutil.which("unshare") or subprocess.run(
      ["unshare", "-rm", "true"], capture_output=True).returncode:
    pytest.skip("no private mount namespace here (unshare -rm): the "
                "simulated ENOSPC tests cover this")
  disk = tmp_path / "disk"
  disk.mkdir()
  script = tmp_path / "full_disk.py"
  script.write_text(_FULL_DISK)
  result = subprocess.run(
      ["unshare", "-rm", sys.executable, str(script), str(disk),
       str(trained["workdir"]), str(free_kib), *_main_flags(trained, 6, 1000),
       *flags],
      cwd=tmp_path, env=_cli_env(), capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1])


def test_a_full_disk_at_an_evaluation_step_is_one_line_and_no_lock(
    trained, tmp_path):
  """Room for the start and the metrics, not for the checkpoint of step 6:
  one line naming the checkpoint and the intact ones, the lock released,
  the metrics ending in a whole line. (Here the writers' close succeeds; a
  failing close is simulated above.)"""
  out = _on_a_small_disk(trained, tmp_path, 160,
                         "--config.mode=train_and_eval",
                         "--config.eval_every_steps=6")
  error = _the_error(out["stderr"], out["code"])
  assert error.startswith(
      f"error: could not save the checkpoint of step 6 in "
      f"{out['workdir']}/checkpoints (No space left on device); the earlier "
      "checkpoints are intact (steps 2, 4)"), error
  assert "Event loop is closed" not in out["stderr"]
  assert not out["lock"]
  assert out["steps"] == [2, 4]
  assert out["metrics"].endswith("\n")
  assert all(json.loads(line) for line in out["metrics"].splitlines())


def test_a_full_disk_at_the_start_leaves_no_lock(trained, tmp_path):
  """No room for the lock itself: one line, and no empty workdir.lock left
  to refuse the next run."""
  out = _on_a_small_disk(trained, tmp_path, 0)
  assert _the_error(out["stderr"], out["code"]) == (
      f"error: cannot write the lock {out['workdir']}/workdir.lock (No space "
      "left on device): free space or fix the file system, then rerun")
  assert not out["lock"] and out["steps"] == [2, 4]
