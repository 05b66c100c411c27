"""Tests of fcn_jax.evaluate: scoring against naive counts, the reports, and
the command end to end on synthetic data."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from fcn_jax import default_config
from fcn_jax.evaluation import metrics
from fcn_jax.evaluation import evaluator
from fcn_jax import visualize
from fcn_jax import voc
from fcn_jax.data.preprocessing import CAFFE_VGG
from tests import helpers
from tests.tiny_fcn import (random_image, run_module, save_tiny_checkpoint,
                            tiny_fcn)
from tests.helpers import jit_apply

ROOT = pathlib.Path(__file__).resolve().parent.parent

DEMO = pathlib.Path(__file__).parent / "fixtures" / "demo"


def _naive_confusion(labels, logits, num_classes):
  """Counts (ground truth, argmax) pairs with a Python loop; 255 is skipped."""
  want = np.zeros((num_classes, num_classes), np.int64)
  for label, prediction in zip(np.ravel(labels),
                               np.ravel(np.argmax(logits, -1))):
    if label < num_classes:
      want[label, prediction] += 1
  return want


@pytest.mark.parametrize("flip", [False, True])
def test_score_split_skips_padding_examples_and_void(flip):
  model, variables = tiny_fcn("fcn32s", num_classes=5)
  rng = np.random.default_rng(0)
  images = np.stack([CAFFE_VGG(random_image(rng, 24, 32)) for _ in range(4)])
  labels = rng.integers(0, 5, (4, 24, 32)).astype(np.int32)
  labels[:, :4] = 255
  batches = [{"image": images[:2], "label": labels[:2],
              "valid": np.array([True, True])},
             {"image": images[2:], "label": labels[2:],
              "valid": np.array([True, False])}]  # The fourth is padding.
  config = default_config.get_config()
  config.eval_batch_size = 2  # Two of the eight fake devices.
  config.tta.flip = flip
  p_eval_step, devices = evaluator.make_eval_fn(model,
                                                helpers.resolved(config))
  results, _ = evaluator.evaluate(p_eval_step, devices, variables["params"],
                              batches, num_classes=5,
                              class_names=[str(k) for k in range(5)])
  hist = np.asarray(results["confusion_matrix"])
  logits = np.asarray(jit_apply(model, variables, jnp.asarray(images[:3])))
  if flip:
    mirrored = np.asarray(jit_apply(model, variables,
                                      jnp.asarray(images[:3, :, ::-1])))
    logits = (logits + mirrored[:, :, ::-1]) / 2
  np.testing.assert_array_equal(hist, _naive_confusion(labels[:3], logits, 5))
  assert results["num_images"] == 3
  assert results["pixel_acc"] == pytest.approx(np.trace(hist) / hist.sum())


def test_report_and_files_for_the_demo(tmp_path):
  labels = visualize.read_label_png(DEMO / "label.png")
  prediction = visualize.read_label_png(DEMO / "output.png")
  hist = np.asarray(metrics.confusion_matrix(labels, prediction, 21))
  names = list(voc.VOC_CLASSES)
  results = metrics.segmentation_metrics(hist, names)
  results["confusion_matrix"] = hist.tolist()
  report = metrics.format_report(results, names)
  # docs/reference.md §12, as percentages.
  for text in ["84.25", "84.55", "71.96", "72.74"]:
    assert text in report
  person = next(line for line in report.splitlines()
                if line.startswith("person"))
  assert "71.95" in person
  evaluator.write_eval_results(str(tmp_path), {"split": "x", "class_names": names,
                                           "metrics": results})
  report = json.loads((tmp_path / evaluator.EVAL_RESULTS_FILE).read_text())
  saved = report["metrics"]
  assert round(saved["mean_iu"], 4) == 0.7196
  assert round(saved["per_class_iu"]["bicycle"], 4) == 0.6621
  assert saved["per_class_iu"]["cat"] is None  # NaN: absent everywhere.
  assert np.asarray(saved["confusion_matrix"]).sum() == 149715
  assert report["split"] == "x"
  with Image.open(tmp_path / "confusion.png") as plot:
    assert plot.format == "PNG" and plot.width > 21 * 20


def test_evaluate_command_end_to_end(tmp_path):
  # FCN-AlexNet: the fewest layers to compile at each native size below.
  model, variables = save_tiny_checkpoint(tmp_path / "run", "fcn_alexnet")
  result = run_module(
      ["fcn_jax.evaluate", "--checkpoint", str(tmp_path / "run"),
       "--dataset", "synthetic_shapes/tiny", "--split", "synthetic_val",
       "--data-dir", str(tmp_path / "data"), "--output",
       str(tmp_path / "eval"), "--no-progress"], tmp_path, ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "10 images" in result.stdout and "mean IU" in result.stdout
  saved = json.loads(
      (tmp_path / "eval" / evaluator.EVAL_RESULTS_FILE).read_text())["metrics"]
  hist = np.asarray(saved["confusion_matrix"])
  assert hist.shape == (21, 21) and saved["num_images"] == 10
  # Independently: every validation image at its native size through the
  # saved model, counted in a Python loop.
  source = tfds.data_source("synthetic_shapes/tiny", split="synthetic_val",
                            data_dir=str(tmp_path / "data"))
  want = np.zeros((21, 21), np.int64)
  for i in range(len(source)):
    example = source[i]
    logits = jit_apply(model, variables, CAFFE_VGG(example["image"])[None])
    want += _naive_confusion(example["segmentation_mask"][..., 0],
                             np.asarray(logits)[0], 21)
  np.testing.assert_array_equal(hist, want)
  np.testing.assert_allclose(saved["pixel_acc"], np.trace(hist) / hist.sum(),
                             rtol=1e-9)
  assert (tmp_path / "eval" / "confusion.png").is_file()
  bad = run_module(["fcn_jax.evaluate", "--checkpoint", str(tmp_path / "run"),
                    "--dataset", "synthetic_shapes/tiny", "--split", "nope",
                    "--data-dir", str(tmp_path / "data")], tmp_path, ROOT)
  assert bad.returncode == 2 and "nope" in bad.stderr
