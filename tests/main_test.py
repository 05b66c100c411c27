"""The real CLI in a subprocess: 2 train steps and one eval on synthetic data."""

import json
import os
import pathlib
import subprocess
import sys

from unittest import mock

import pytest

from configs import quickstart
from fcn_jax.training import loop

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(args, tmp_path, timeout=300):
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run(
      [sys.executable, "-m", "fcn_jax.main", *args], cwd=tmp_path, env=env,
      capture_output=True, text=True, timeout=timeout)


def _tiny_overrides(data_dir):
  return [
      "--config.dataset.name=synthetic_shapes/tiny",
      f"--config.dataset.data_dir={data_dir}",
      "--config.model.width_divisor=64",
      "--config.num_train_steps=2",
      "--config.eval_every_steps=2",
      "--config.log_every_steps=1",
      "--config.batch_size=2",
      "--config.eval_batch_size=2",
      "--config.input.crop_size=32",
      "--config.input.eval_pad_size=48",
  ]


def test_main_trains_evaluates_and_checkpoints(tmp_path):
  workdir = tmp_path / "run"
  result = _run(["--config", str(REPO / "configs" / "quickstart.py"),
                 "--workdir", str(workdir),
                 *_tiny_overrides(tmp_path / "tfds")], tmp_path)
  assert result.returncode == 0, result.stderr[-5000:]
  log = result.stdout + result.stderr
  assert "mean IU" in log and "per-class IU" in log
  assert "step 2/2" in log
  assert "XLA:CPU flags tuned" in log  # fcn_jax.xla_flags' default.

  step_dir = workdir / "checkpoints" / "2"
  for item in ("params", "train_state", "data_iter", "metadata"):
    assert (step_dir / item).is_dir(), item
  records = [json.loads(line)
             for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if r["split"] == "train"]
  eval_records = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train_records] == [1, 2]
  assert len(eval_records) == 1 and eval_records[0]["step"] == 2
  assert eval_records[0]["num_images"] == 10  # synthetic_shapes/tiny val.
  assert 0.0 <= eval_records[0]["pixel_acc"] <= 1.0
  assert len(eval_records[0]["per_class_iu"]) == 21
  assert list((workdir / "tensorboard").iterdir())
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"] == "fcn8s" and config["num_classes"] == 21

  # The user is told what happens and what to do next.
  assert "Compiling the train step (this can take a minute)" in log
  assert log.index("Compiling the train step") < log.index("step 1/2")
  assert (f"Training done: step 2; checkpoints in {workdir}/checkpoints (2); "
          "best step 2: mean IU " in log)
  assert f"python -m fcn_jax.predict --checkpoint {workdir} " in log
  assert f"python -m fcn_jax.plot_metrics {workdir}" in log
  assert "tracked_metric" not in log  # Orbax's noise stays hidden.

  # Evaluation only, of the checkpoint just written.
  result = _run(["--config", str(REPO / "configs" / "quickstart.py"),
                 "--workdir", str(workdir), "--config.mode=eval",
                 *_tiny_overrides(tmp_path / "tfds")], tmp_path)
  assert result.returncode == 0, result.stderr[-5000:]
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["step"] == 2
  assert results["metrics"]["mean_iu"] == pytest.approx(
      eval_records[0]["mean_iu"], rel=1e-6)
  (workdir / "eval_results.json").unlink()

  # python -m fcn_jax.evaluate on the workdir, with no other flag, takes the
  # run's dataset, data dir, padding, batch and TTA from its config.json and
  # gives training's numbers (the same confusion matrix), reported into the
  # workdir, not the current directory.
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "fcn_jax.evaluate", "--checkpoint",
       str(workdir), "--no_progress"], cwd=tmp_path, env=env,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-5000:]
  saved = f"[{workdir / 'config.json'}]"
  for line in ["dataset.name = synthetic_shapes/tiny", "input.eval_pad_size = 48",
               "eval_batch_size = 2", f"dataset.data_dir = {tmp_path / 'tfds'}"]:
    assert f"  {line}  {saved}" in result.stdout, result.stdout
  assert "read only" not in result.stderr  # Orbax's noise stays hidden.
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["step"] == 2 and results["eval_pad_size"] == 48
  assert (results["metrics"]["confusion_matrix"]
          == eval_records[0]["confusion_matrix"])
  assert results["metrics"]["mean_iu"] == eval_records[0]["mean_iu"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tfds"]

  # Rerunning the finished run (what main runs, in this process: no
  # compile, a restore) says so, returns normally (exit 0), changes nothing.
  before = (workdir / "metrics.jsonl").read_text()
  config = quickstart.get_config()
  for override in _tiny_overrides(tmp_path / "tfds"):
    field, value = override[len("--config."):].split("=", 1)
    *groups, name = field.split(".")
    group = config
    for part in groups:
      group = group[part]
    setattr(group, name, type(group[name])(value))
  with mock.patch.object(loop.logging, "warning") as warning:
    loop.run(config, str(workdir))
  message = warning.call_args[0][0] % warning.call_args[0][1:]
  assert message.startswith(
      f"Nothing to do: {workdir} is at step 2 and config.num_train_steps=2; "
      "raise --config.num_train_steps")
  assert (workdir / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--config.no_such_field=1"], "no_such_field"),
    (["stray"], "Unexpected command-line arguments"),
    (["--config.mode=predict"], "config.mode"),
    (["--config.model.upsample_mode=sparse"], "config.model.upsample_mode"),
    (["--config.init_from=/no/such/weights"], "/no/such/weights"),
    (["--config=no_such_config.py"],
     "error: cannot load the config file no_such_config.py: no such file\n"),
    # Only the bad override is named.
    (["--config.model.width_divisor=64", "--config.nosuch.deep=1"],
     "unknown config field --config.nosuch.deep ("),
    # A nested typo among several overrides: that one, with the fix.
    (["--config.num_train_steps=3", "--config.model.widht_divisor=64",
      "--config.batch_size=2", "--config.input.crop_size=32"],
     "error: unknown config field --config.model.widht_divisor ("
     "'widht_divisor' is not a field; did you mean 'width_divisor'?)"),
    # One line, no Python repr, the suggestion in words.
    (["--config.num_train_step=3"],
     "error: unknown config field --config.num_train_step ('num_train_step' "
     "is not a field; did you mean 'num_train_steps'?)"),
    (["--workdir=gs://bucket/run"], "gcsfuse"),
    (["--xla_cpu_flags=fast"], "--xla_cpu_flags"),
])
def test_main_rejects_bad_arguments(tmp_path, args, message):
  result = _run(["--config", str(REPO / "configs" / "quickstart.py"),
                 "--workdir", str(tmp_path / "run"), *args], tmp_path)
  assert result.returncode == 2  # Bad input.
  assert message in result.stderr
  assert "Traceback" not in result.stderr  # A message, not a crash.


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n  pass\n",
     "the config file bad_config.py has a syntax error at line 1"),
    ("from fcn_jax import default_config\n\ndef get_config():\n"
     "  return default_config.get_config().no_such_group\n",
     "the config file bad_config.py fails at line 4: AttributeError"),
])
def test_a_config_file_that_does_not_load_is_one_line(tmp_path, source,
                                                      message):
  (tmp_path / "bad_config.py").write_text(source)
  result = _run(["--config=bad_config.py", "--workdir", str(tmp_path / "run")],
                tmp_path)
  assert result.returncode == 2
  assert message in result.stderr
  assert "Traceback" not in result.stderr
