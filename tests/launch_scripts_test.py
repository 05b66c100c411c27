"""The Cloud TPU and SLURM launch scripts, run against fake gcloud/srun.

The fakes record their arguments, so the tests check the commands the scripts
would run on real machines: that every worker runs the same ``fcn_jax.main``
command, that the remote script is valid bash, that a bucket is mounted when
asked, and that the queued resource is created, polled and deleted.
"""

import os
import pathlib
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Appends one record per call: the arguments, each ended by a NUL byte, then
# an ASCII record separator. As gcloud for `queued-resources describe`, answers
# ACTIVE.
FAKE = """#!/usr/bin/env bash
printf '%s\\0' "$@" >> "$CALLS"
printf '\\036' >> "$CALLS"
case "$*" in *describe*) echo ACTIVE ;; esac
"""


@pytest.fixture
def fake_bin(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "srun"):
    path = bin_dir / name
    path.write_text(FAKE)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return bin_dir


def _run(script, args, env, fake_bin, tmp_path):
  calls = tmp_path / "calls"
  full_env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
                  CALLS=str(calls), TMPDIR=str(tmp_path), **env)
  result = subprocess.run(["bash", str(REPO / "launch" / script), *args],
                          env=full_env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
  recorded = []
  if calls.exists():
    for record in calls.read_bytes().split(b"\x1e")[:-1]:
      recorded.append([a.decode() for a in record.split(b"\0")[:-1]])
  return result, recorded


def _remote_command(calls):
  """The --command of the `tpu-vm ssh ... --worker=all` call."""
  for call in calls:
    if "ssh" in call and "--worker=all" in call:
      return call[call.index("--command") + 1]
  raise AssertionError(f"no ssh to all workers in {calls}")


def test_tpu_run_starts_the_same_command_on_every_worker(fake_bin, tmp_path):
  result, calls = _run(
      "tpu_run.sh", ["configs/voc_fcn8s_modern.py", "--config.seed=3"],
      {"TPU_NAME": "fcn", "ZONE": "us-central2-b", "GCS_BUCKET": "my-bucket",
       "WORKDIR": "/gcs/my-bucket/runs/a",
       "TFDS_DATA_DIR": "/gcs/my-bucket/tfds"}, fake_bin, tmp_path)
  assert result.returncode == 0, result.stderr
  scp = [c for c in calls if "scp" in c]
  assert scp and "--worker=all" in scp[0]
  assert "fcn:/tmp/fcn_jax_src.tgz" in scp[0]
  assert (tmp_path / "fcn_jax_src.tgz").is_file()  # The checkout it copies.
  remote = _remote_command(calls)
  syntax = subprocess.run(["bash", "-n"], input=remote, text=True,
                          capture_output=True)
  assert syntax.returncode == 0, syntax.stderr
  assert ("TFDS_DATA_DIR=/gcs/my-bucket/tfds python3 -m fcn_jax.main "
          "--config configs/voc_fcn8s_modern.py --workdir "
          "/gcs/my-bucket/runs/a --config.seed=3") in remote
  assert ("gcsfuse --implicit-dirs --rename-dir-limit=100000 my-bucket "
          "/gcs/my-bucket") in remote
  assert "fcn_jax_run.w$W.log" in remote  # One log per worker.


def test_tpu_run_requires_a_workdir(fake_bin, tmp_path):
  result, calls = _run("tpu_run.sh", ["configs/quickstart.py"],
                       {"TPU_NAME": "fcn", "ZONE": "z"}, fake_bin, tmp_path)
  assert result.returncode != 0 and "WORKDIR" in result.stderr
  assert not calls


def test_tpu_create_waits_for_the_queued_resource_and_delete_removes_it(
    fake_bin, tmp_path):
  env = {"TPU_NAME": "fcn", "ZONE": "us-central2-b", "ACCELERATOR": "v4-32",
         "CAPACITY": "--spot"}
  result, calls = _run("tpu_create.sh", [], env, fake_bin, tmp_path)
  assert result.returncode == 0, result.stderr
  create = calls[0]
  assert create[:5] == ["compute", "tpus", "queued-resources", "create",
                        "fcn-qr"]
  assert create[create.index("--accelerator-type") + 1] == "v4-32"
  assert create[create.index("--node-id") + 1] == "fcn"
  assert "--spot" in create
  assert any("describe" in c for c in calls[1:])
  result, calls = _run("tpu_delete.sh", [], env, fake_bin, tmp_path)
  assert result.returncode == 0, result.stderr
  assert calls[-1][:5] == ["compute", "tpus", "queued-resources", "delete",
                           "fcn-qr"]


def test_slurm_script_runs_main_once_per_task(fake_bin, tmp_path):
  result, calls = _run("slurm_gpu.sbatch",
                       ["configs/voc_fcn8s_modern.py", "/shared/runs/a",
                        "--config.seed=1"], {}, fake_bin, tmp_path)
  assert result.returncode == 0, result.stderr
  (srun,) = calls
  assert srun[srun.index("fcn_jax.main") - 2:] == [
      "python", "-m", "fcn_jax.main", "--config",
      "configs/voc_fcn8s_modern.py", "--workdir", "/shared/runs/a",
      "--config.seed=1"]
  script = (REPO / "launch" / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --gpus-per-task=1" in script  # One task per GPU.
  assert "#SBATCH --signal=TERM@" in script  # Preemption warning -> SIGTERM.
