"""benchmarks/gpu_check.sh, the one script for the day a GPU is lent: on a
machine without a GPU it must say so in one line and run nothing."""

import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                    reason="this machine may have a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_runs_nothing(tmp_path):
  out = tmp_path / "check"
  run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"),
                        str(out)], capture_output=True, text=True,
                       env=dict(os.environ), cwd=tmp_path, timeout=300)
  assert run.returncode == 3, run.stdout + run.stderr
  assert run.stdout == ""
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU found")
  assert not out.exists()  # Nothing run, nothing written.
