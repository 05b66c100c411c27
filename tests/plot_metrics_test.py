"""plot_metrics on metrics.jsonl files written by the training MetricWriter."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax import plot_metrics


def _write_run(workdir, steps, eval_every, lr0, resume_at=None):
  """Training-like scalars through the real writer; a resume rewrites steps.

  Returns:
    The expected curves: name -> {step: value} (the last write wins).
  """
  expected = {}
  writer = logging_utils.MetricWriter(str(workdir))

  def write(step, split, scalars):
    writer.write_scalars(step, split, scalars)
    for name, value in scalars.items():
      expected.setdefault((split, name), {})[step] = value

  passes = [range(10, steps + 1, 10)]
  if resume_at is not None:  # Crashed after resume_at, then resumed earlier.
    passes = [range(10, resume_at + 1, 10), range(resume_at - 20, steps + 1,
                                                  10)]
  for attempt, pass_steps in enumerate(passes):
    for step in pass_steps:
      write(step, "train", {"loss": 100.0 / step + attempt,
                            "learning_rate": lr0 * (1 - step / (steps + 1)),
                            "pixel_acc": 0.5})
      if step % eval_every == 0:
        write(step, "eval", {"pixel_acc": 0.8, "mean_acc": 0.6,
                             "mean_iu": step / (10 * steps) + attempt / 100,
                             "fw_iu": 0.7, "per_class_iu": [0.1, None],
                             "num_images": 10})
  writer.close()
  return expected


def _as_dict(series):
  steps, values = series
  return dict(zip(steps, values))


def test_reads_curves_and_the_last_write_wins(tmp_path):
  expected = _write_run(tmp_path / "a", 100, 50, 1e-3, resume_at=60)
  run = plot_metrics.load_run(str(tmp_path / "a"))
  assert run.label == "a"
  for (split, name), by_step in expected.items():
    if name == "per_class_iu":
      assert name not in run.eval  # Lists are not curves.
      continue
    got = _as_dict(getattr(run, split)[name])
    assert got == pytest.approx(by_step), (split, name)
    assert list(getattr(run, split)[name][0]) == sorted(by_step)
  assert plot_metrics.load_run(
      str(tmp_path / "a" / "metrics.jsonl"), "x").label == "x"


def test_figure_overlays_runs_in_every_panel(tmp_path):
  _write_run(tmp_path / "a", 100, 50, 1e-3)
  _write_run(tmp_path / "b", 60, 20, 1e-2)
  runs = [plot_metrics.load_run(str(tmp_path / n)) for n in ("a", "b")]
  fig = plot_metrics.plot_runs(runs)
  axes = fig.axes
  titles = [ax.get_title() for ax in axes]
  assert titles == ["training loss", "learning rate",
                    "validation pixel accuracy (%)",
                    "validation mean accuracy (%)",
                    "validation mean IU (%)", "validation f.w. IU (%)"]
  for ax, (split, key, factor) in zip(axes, [
      ("train", "loss", 1), ("train", "learning_rate", 1),
      ("eval", "pixel_acc", 100), ("eval", "mean_acc", 100),
      ("eval", "mean_iu", 100), ("eval", "fw_iu", 100)]):
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    for line, run in zip(lines, runs):
      steps, values = getattr(run, split)[key]
      np.testing.assert_array_equal(line.get_xdata(), steps)
      np.testing.assert_allclose(line.get_ydata(),
                                 np.asarray(values) * factor)
  assert axes[0].get_yscale() == "linear"  # 100/step spans 10x only.
  assert axes[1].get_yscale() == "log"  # 1e-2 .. 1e-5.


def test_cli_writes_a_png_and_reports_errors(tmp_path, capsys):
  _write_run(tmp_path / "a", 40, 20, 1e-3)
  assert plot_metrics.main([str(tmp_path / "a")]) == 0
  png = tmp_path / "a" / "metrics.png"
  with Image.open(png) as image:
    assert image.format == "PNG" and image.size == (1300, 700)
    assert len(np.unique(np.asarray(image.convert("L")))) > 10  # Drawn.
  out = str(tmp_path / "sub" / "both.png")
  assert plot_metrics.main([str(tmp_path / "a"), str(tmp_path / "a"),
                            "--labels", "x,y", "--output", out]) == 0
  assert "x: 4 train / 2 eval points" in capsys.readouterr().out
  assert plot_metrics.main([str(tmp_path / "missing")]) == 2
  assert "metrics.jsonl does not exist" in capsys.readouterr().err
  assert plot_metrics.main([str(tmp_path / "a"), "--labels", "x,y"]) == 2
  # A line cut off by a crash is skipped at the end, an error elsewhere.
  path = tmp_path / "a" / "metrics.jsonl"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines + ['{"step": 5']) + "\n")
  assert plot_metrics.load_run(str(path)).train["loss"][0][0] == 10
  path.write_text("\n".join([lines[0], "garbage"] + lines[1:]) + "\n")
  with pytest.raises(errors.UserError,
                     match="metrics.jsonl:2 is not a metrics"):
    plot_metrics.load_run(str(path))
  json.loads(lines[0])  # The fixture itself is strict JSON.
  # Not text at all: one line too, not a UnicodeDecodeError's traceback.
  path.write_bytes(b"\xff\xfe\x00 binary")
  assert plot_metrics.main([str(path)]) == 2
  assert "metrics.jsonl is not a metrics.jsonl (not UTF-8 text" in (
      capsys.readouterr().err)


WRITER_WITHOUT_TORCH = r"""
import importlib.util, pathlib, sys
from fcn_jax import logging_utils
writer = logging_utils.MetricWriter(sys.argv[1])
writer.write_scalars(1, "train", {"loss": 0.5})
writer.close()
print("torch imported:", "torch" in sys.modules)
if importlib.util.find_spec("torch") is not None:
  import torch  # Still importable afterwards.
  print("torch after:", torch.zeros(2).sum().item())
"""


def test_the_writer_leaves_pytorch_unimported(tmp_path):
  """tensorboardX would import torch (1.8 s of every start) when installed;
  the writer's TensorBoard file is written all the same."""
  script = tmp_path / "write.py"
  script.write_text(WRITER_WITHOUT_TORCH)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  result = subprocess.run([sys.executable, str(script), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "torch imported: False" in result.stdout
  if importlib.util.find_spec("torch") is not None:  # Not imported here.
    assert "torch after: 0.0" in result.stdout
  (events,) = (tmp_path / "run" / logging_utils.TENSORBOARD_DIR).iterdir()
  assert b"train/loss" in events.read_bytes()
