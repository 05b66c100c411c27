"""The command line's one error path and its checks, in subprocesses.

Bad input is one line on stderr, ``error: ...``, and exit status 2; a bug
(an exception that is not a :class:`fcn_jax.errors.UserError`) keeps its
traceback; ``--help`` exits 0.
"""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.py")


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
