"""The package layout: what was written before the move still works, and every
command starts.

``fixtures/premove`` was written by the code before the modules moved into
packages (``fcn_jax/train.py`` and friends; commit c2577ab): a training workdir
of the quickstart net at width/64 on ``synthetic_shapes/tiny`` with checkpoints
after steps 1 and 2, and a weights export of step 2. ``README.make.sh`` there is
the command that wrote them.
"""

import json
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest

from fcn_jax import checkpointing
from fcn_jax import predict
from fcn_jax.evaluation import evaluator
from fcn_jax.training import loop

REPO = pathlib.Path(__file__).resolve().parents[1]
PREMOVE = REPO / "tests" / "fixtures" / "premove"


def _config(workdir: pathlib.Path, data_dir: pathlib.Path):
  """The run's own config (config.json), pointed at a fresh data dir."""
  saved = json.loads(json.loads((workdir / "config.json").read_text())["config"])
  sys.path.insert(0, str(REPO / "configs"))
  try:
    import quickstart  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  config = quickstart.get_config()
  for group, values in saved.items():
    if isinstance(values, dict):
      for key, value in values.items():
        if isinstance(value, dict):
          continue  # label_features: {} in this run, as the default.
        config[group][key] = tuple(value) if isinstance(value, list) else value
    else:
      config[group] = values
  config.dataset.data_dir = str(data_dir)
  return config


def test_premove_workdir_resumes_to_the_premove_result(tmp_path):
  """Resuming the pre-move step-1 checkpoint with today's code gives the
  parameters the pre-move code saved at step 2 (same data position, same
  optimizer state), and the step-2 checkpoint evaluates as it did then."""
  workdir = tmp_path / "run"
  shutil.copytree(PREMOVE / "workdir", workdir)
  premove_step2 = checkpointing.load(str(workdir), 2)
  shutil.rmtree(workdir / "checkpoints" / "2")
  config = _config(workdir, tmp_path / "tfds")
  config.mode = "train"
  loop.run(config, str(workdir))
  resumed = checkpointing.load(str(workdir), "latest")
  assert resumed.step == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               resumed.params, premove_step2.params)

  report = evaluator.evaluate_checkpoint(*evaluator.load_checkpoint(
      config, str(PREMOVE / "workdir"), step=2))
  saved = json.loads((PREMOVE / "workdir" / "metrics.jsonl").read_text()
                     .splitlines()[-1])
  assert saved["split"] == "eval" and saved["step"] == 2
  assert report["metrics"]["mean_iu"] == pytest.approx(saved["mean_iu"],
                                                       rel=1e-5)


def test_premove_weights_export_predicts(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  shutil.copy(REPO / "tests" / "fixtures" / "demo" / "image.jpg",
              images / "a.jpg")
  code = predict.main(["--checkpoint", str(PREMOVE / "weights"), "--input",
                       str(images), "--output", str(tmp_path / "out"),
                       "--no-progress"])
  assert code == 0
  assert (tmp_path / "out" / "a.png").is_file()
