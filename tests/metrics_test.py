"""FCN metrics (docs/reference.md §7) against a naive NumPy re-statement."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.evaluation import metrics


def _naive_confusion(labels, predictions, n):
  hist = np.zeros((n, n), np.int64)
  for a, b in zip(labels.ravel(), predictions.ravel()):
    if 0 <= a < n:
      hist[a, b] += 1
  return hist


def _naive_metrics(hist):
  """docs/reference.md §7 in loops: NaN classes are skipped by the means."""
  n = hist.shape[0]
  total = sum(hist[i, j] for i in range(n) for j in range(n))
  gt = [sum(hist[i, j] for j in range(n)) for i in range(n)]
  pred = [sum(hist[j, i] for j in range(n)) for i in range(n)]
  nan = float("nan")
  pixel_acc = sum(hist[i, i] for i in range(n)) / total if total else nan
  accs = [hist[i, i] / gt[i] for i in range(n) if gt[i] > 0]
  ius = []
  for i in range(n):
    union = gt[i] + pred[i] - hist[i, i]
    ius.append(hist[i, i] / union if union > 0 else nan)
  defined = [v for v in ius if not math.isnan(v)]
  fw = (sum(gt[i] / total * ius[i] for i in range(n) if gt[i] > 0)
        if total else nan)
  return {
      "pixel_acc": pixel_acc,
      "mean_acc": sum(accs) / len(accs) if accs else nan,
      "mean_iu": sum(defined) / len(defined) if defined else nan,
      "fw_iu": fw,
      "per_class_iu": ius,
  }


def _assert_same(got, want):
  for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
    if math.isnan(want[key]):
      assert math.isnan(got[key]), key
    else:
      np.testing.assert_allclose(got[key], want[key], rtol=1e-12,
                                 err_msg=key)
  np.testing.assert_allclose(got["per_class_iu"], want["per_class_iu"],
                             rtol=1e-12)


def test_confusion_matrix_counts_and_ignores_out_of_range_labels():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 6, size=(3, 11, 13))
  labels[rng.random(labels.shape) < 0.2] = 255
  labels[0, 0, :3] = -1
  predictions = rng.integers(0, 6, size=labels.shape)
  got = metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions),
                                 6)
  np.testing.assert_array_equal(np.asarray(got),
                                _naive_confusion(labels, predictions, 6))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matrices(seed):
  rng = np.random.default_rng(seed)
  hist = rng.integers(0, 1000, size=(21, 21))
  _assert_same(metrics.segmentation_metrics(hist), _naive_metrics(hist))


def test_class_absent_from_ground_truth_and_predictions_is_skipped():
  rng = np.random.default_rng(3)
  hist = rng.integers(1, 50, size=(5, 5))
  hist[2, :] = 0
  hist[:, 2] = 0
  got = metrics.segmentation_metrics(hist)
  _assert_same(got, _naive_metrics(hist))
  assert math.isnan(got["per_class_iu"][2])


def test_class_only_predicted_counts_as_zero_iu():
  rng = np.random.default_rng(4)
  hist = rng.integers(1, 50, size=(4, 4))
  hist[3, :] = 0  # never in the ground truth, but predicted.
  got = metrics.segmentation_metrics(hist)
  _assert_same(got, _naive_metrics(hist))
  assert got["per_class_iu"][3] == 0.0
  # Mean accuracy skips it; mean IU counts its 0.
  np.testing.assert_allclose(
      got["mean_iu"], np.mean(got["per_class_iu"]), rtol=1e-12)


def test_all_void_gives_nan_everywhere():
  hist = np.zeros((3, 3), np.int64)
  got = metrics.segmentation_metrics(hist)
  _assert_same(got, _naive_metrics(hist))
  assert all(math.isnan(got[k])
             for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))


def test_perfect_prediction():
  """Perfect prediction with an absent class: every metric is 1."""
  hist = np.diag([10, 0, 5])
  got = metrics.segmentation_metrics(hist)
  assert got["pixel_acc"] == 1.0
  assert got["mean_iu"] == 1.0
  assert got["fw_iu"] == 1.0
  assert math.isnan(got["per_class_iu"][1])
