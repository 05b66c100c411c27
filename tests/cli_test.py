"""The command line's one error path and its checks, in subprocesses.

Bad input is one line on stderr, ``error: ...``, and exit status 2; a bug
(an exception that is not a :class:`fcn_jax.errors.UserError`, a
``ValueError`` of fcn_jax's own included) keeps its traceback; a Ctrl-C that
no command handles is one line and exit status 130; ``--help`` exits 0.
"""

import contextlib
import os
import pathlib
import signal
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.py")


@contextlib.contextmanager
def _sigint_as_in_a_terminal():
  """Children started inside get SIGINT as a terminal's foreground command
  has it: handled by default and not blocked. A worker's own state (a
  SIGINT blocked by an earlier test's library, or ignored), inherited
  across exec, would make a Ctrl-C test depend on the tests that ran before
  it (seen in full clean-clone runs: the command never got the signal)."""
  mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
  handler = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _run(command, args, cwd, timeout=300):
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-m", command, *args], cwd=cwd,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("source, args, message", [
    # No get_config: not "unknown config field ('module' ...)".
    ("x = 1\n", ["--config.seed=1"],
     "error: the config file cfg.py defines no get_config()"),
    # get_config returns None: not absl's 4-line FATAL.
    ("def get_config():\n  pass\n", [],
     "error: get_config() of the config file cfg.py returned None (a "
     "missing return statement?), not a ConfigDict"),
    # A misspelt field set inside the file is refused, with the fix.
    ("from fcn_jax import default_config\n\ndef get_config():\n"
     "  config = default_config.get_config()\n"
     "  config.optim.base_rl = 10.0\n  return config\n", [],
     "error: unknown config field config.optim.base_rl in the config file "
     "cfg.py (did you mean 'base_lr'?)"),
    # A typo in the --config path, with overrides (once a traceback).
    (None, ["--config=no_such.py", "--config.seed=1"],
     "error: cannot load the config file no_such.py: no such file"),
    (None, ["--config", "no_such.py", "--config.seed=1"],
     "error: cannot load the config file no_such.py: no such file"),
    # A hyphen in a field (once a traceback from ml_collections' parser).
    (None, [f"--config={QUICKSTART}", "--config.dataset.data-dir=/tmp"],
     "error: --config.dataset.data-dir: config fields are spelled with "
     "underscores: --config.dataset.data_dir"),
])
def test_config_file_mistakes_are_one_line(tmp_path, source, args, message):
  if source is not None:
    (tmp_path / "cfg.py").write_text(source)
    args = ["--config=cfg.py", *args]
  result = _run("fcn_jax.main", [*args, "--workdir", str(tmp_path / "run")],
                tmp_path)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert len(_error_lines(result.stderr)) == 1
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()  # Nothing written.


def _bug_inside_jax():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  # jnp.split raises ValueError from JAX's own code, while tracing.
  return jax.jit(lambda x: jnp.split(x, 2))(jnp.zeros(5))


def test_a_value_error_inside_jax_keeps_its_traceback(capsys):
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="equal division"):
    cli.run_reporting_errors(_bug_inside_jax)
  with pytest.raises(ValueError, match="equal division"):
    cli.exit_code(_bug_inside_jax)
  assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["UserError", "DivergedError"])
def test_a_user_error_is_one_line_with_exit_2(capsys, kind):
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  from fcn_jax import errors  # pylint: disable=g-import-not-at-top

  def mistake():
    raise getattr(errors, kind)("config.seed must be an int: pass "
                                "--config.seed=1")

  assert cli.exit_code(mistake) == 2
  with pytest.raises(SystemExit) as exited:
    cli.run_reporting_errors(mistake)
  assert exited.value.code == 2
  assert capsys.readouterr().err == (
      "error: config.seed must be an int: pass --config.seed=1\n" * 2)


# A mistake found deep inside the start-up (input_config, parallel), not by
# the flag parser: still one line, exit status 2, nothing written.
@pytest.mark.parametrize("override, message", [
    ("--config.input.train_mode=bogus",
     "error: config.input.train_mode must be one of ('reference', 'epochs'), "
     "got 'bogus'."),
    ("--config.parallel=pjit",
     "error: config.parallel must be one of ('pmap', 'jit'), got 'pjit'"),
])
def test_a_user_error_from_deep_inside_is_one_line(tmp_path, override,
                                                   message):
  result = _run("fcn_jax.main", [f"--config={QUICKSTART}", override,
                                 "--workdir", str(tmp_path / "run")], tmp_path)
  assert result.returncode == 2, result.stderr[-3000:]
  assert _error_lines(result.stderr) == [message]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


# ``python -m fcn_jax.plot_metrics WORKDIR`` with the library function that
# writes its plot (matplotlib's savefig) replaced first.
_PATCHED_COMMAND = """
import os, runpy, signal, sys, time
from matplotlib import figure
import numpy as np
from fcn_jax import visualize
def bug(*args, **kwargs):  # fcn_jax's own code, called wrongly: a bug.
  return visualize.colorize(np.zeros((2, 2, 2)))
def ctrl_c(*args, **kwargs):  # Interrupted at once: handled in this frame.
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(10)
figure.Figure.savefig = {replacement}
sys.argv = ["plot_metrics", "run"]
runpy.run_module("fcn_jax.plot_metrics", run_name="__main__")
"""


def _run_patched(replacement, cwd):
  (cwd / "run").mkdir()
  (cwd / "run" / "metrics.jsonl").write_text(
      '{"step": 1, "split": "train", "loss": 1.0}\n')
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run(
      [sys.executable, "-c", _PATCHED_COMMAND.format(replacement=replacement)],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_value_error_of_fcn_jax_itself_keeps_its_traceback(tmp_path):
  # A ValueError raised in fcn_jax's own code that is no UserError is a bug
  # (here a wrong argument): its traceback, not a one-line "error:".
  result = _run_patched("bug", tmp_path)
  assert result.returncode not in (0, 2), result.stderr[-3000:]
  assert "Traceback" in result.stderr
  assert "ValueError: expected a [H, W] label map" in result.stderr
  assert "fcn_jax/visualize.py" in result.stderr
  assert not _error_lines(result.stderr)


def test_ctrl_c_at_start_up_is_one_line_and_exit_130(tmp_path):
  # absl commands: a Ctrl-C while the config file loads (start-up, before
  # any handling of the training's own).
  (tmp_path / "cfg.py").write_text(
      "import os, signal, time\n\ndef get_config():\n"
      "  os.kill(os.getpid(), signal.SIGINT)\n"
      "  time.sleep(10)\n")  # Interrupted at once: handled in this frame.
  with _sigint_as_in_a_terminal():
    main = _run("fcn_jax.main", ["--config=cfg.py", "--workdir",
                                 str(tmp_path / "main")], tmp_path)
    # The others (predict, export, convert, prepare_data, plot_metrics).
    plot = _run_patched("ctrl_c", tmp_path)
  for result, line in (
      (main, "Interrupted (Ctrl-C); the checkpoints saved before are kept; "
             "the same command resumes from the last one."),
      (plot, "Interrupted (Ctrl-C); the command did not finish.")):
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "KeyboardInterrupt" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == line
  assert not (tmp_path / "main").exists()


def test_prepare_data_names_an_unknown_dataset_not_its_options(capsys):
  from fcn_jax import prepare_data  # pylint: disable=g-import-not-at-top
  assert prepare_data.main(["--dataset", "foldr", "--name", "x"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --dataset foldr: unknown dataset; choose one "
                        "of "), err
  assert "folder" in err and "voc_seg" in err
  assert "--name" not in err.split(";")[0]


def test_a_dataset_not_in_the_default_data_dir_says_data_dir_first(tmp_path):
  from fcn_jax import datasets  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError) as raised:
    datasets.builder("my_cats", str(tmp_path))
  message = str(raised.value)
  # The likely mistake (a data dir not passed) before rebuilding.
  assert 0 <= message.index("--config.dataset.data_dir=") < message.index(
      "prepare_data --dataset folder")


def test_the_closing_summary_suggests_no_missing_folder(tmp_path):
  from fcn_jax.training import loop  # pylint: disable=g-import-not-at-top

  class Finished:  # What closing_summary reads of a Checkpointer.
    directory = str(tmp_path / "checkpoints")

    def latest_step(self):
      return 2

    def best_step(self):
      return None

    def all_steps(self):
      return [2]

  summary = loop.closing_summary(str(tmp_path), Finished())
  predict_line = next(line for line in summary.splitlines()
                      if "fcn_jax.predict" in line)
  glob = predict_line.split("--input ")[1].split()[0].strip("'")
  # A placeholder the user fills in, not a folder that is not there.
  assert glob.startswith("<") or os.path.exists(os.path.dirname(glob)), glob


COMMANDS = ("main", "evaluate", "dry_run", "predict", "export", "convert",
            "prepare_data", "plot_metrics")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_exits_0(command, tmp_path):
  result = _run(f"fcn_jax.{command}", ["--help"], tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]  # Not absl's 1.
  assert "--" in result.stdout and "Traceback" not in result.stderr
  if command in ("main", "evaluate", "dry_run"):  # The absl commands.
    assert "--config" in result.stdout
  if command == "evaluate":  # One spelling shown; no --[no]no-progress.
    assert "--data_dir" in result.stdout
    assert "--eval_pad_size" in result.stdout
    assert "data-dir" not in result.stdout
    assert "no-progress" not in result.stdout
