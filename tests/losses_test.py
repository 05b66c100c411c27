"""Pixelwise cross-entropy against NumPy (docs/reference.md §4.9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import errors
from fcn_jax.models import losses

NUM_CLASSES = 5


def _numpy_cross_entropy(logits, labels):
  """-log softmax per pixel, float64, with an explicit loop over pixels."""
  logits = np.asarray(logits, np.float64)
  out = np.zeros(labels.shape)
  for index in np.ndindex(labels.shape):
    row = logits[index]
    log_z = np.log(np.sum(np.exp(row - row.max()))) + row.max()
    label = labels[index]
    out[index] = log_z - row[label] if 0 <= label < logits.shape[-1] else 0.0
  return out


def _batch(seed=0, shape=(2, 6, 7), void_fraction=0.3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(scale=3.0, size=shape + (NUM_CLASSES,)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)
  labels[rng.random(shape) < void_fraction] = 255
  return logits, labels


def test_cross_entropy_matches_numpy():
  logits, labels = _batch()
  got = losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  want = _numpy_cross_entropy(logits, labels)
  valid = labels != 255
  np.testing.assert_allclose(np.asarray(got)[valid], want[valid], rtol=1e-5)


def test_summed_loss_is_sum_over_valid_pixels_per_image():
  logits, labels = _batch(seed=1)
  got = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                 normalization="sum")
  want = _numpy_cross_entropy(logits, labels).sum() / labels.shape[0]
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_sum_and_valid_differ_by_the_valid_pixel_count():
  logits, labels = _batch(seed=2, shape=(1, 9, 8))
  summed = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                    normalization="sum")
  mean = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                  normalization="valid")
  num_valid = int(np.sum(labels != 255))
  assert 0 < num_valid < labels.size
  np.testing.assert_allclose(float(summed), float(mean) * num_valid,
                             rtol=1e-6)


def test_ignored_pixels_have_zero_loss_and_gradient():
  logits, labels = _batch(seed=3)
  for normalization in losses.NORMALIZATIONS:
    grad = jax.grad(lambda x: losses.segmentation_loss(
        x, jnp.asarray(labels), normalization=normalization))(
            jnp.asarray(logits))
    grad = np.asarray(grad)
    assert np.all(grad[labels == 255] == 0.0)
    assert np.all(np.abs(grad[labels != 255]).sum(-1) > 0)
  # Changing the logits of ignored pixels does not change the loss.
  changed = logits.copy()
  changed[labels == 255] = 1e3
  for normalization in losses.NORMALIZATIONS:
    a = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                 normalization=normalization)
    b = losses.segmentation_loss(jnp.asarray(changed), jnp.asarray(labels),
                                 normalization=normalization)
    assert float(a) == float(b)


def test_all_void_batch_gives_zero_not_nan():
  logits, _ = _batch(seed=4)
  labels = np.full(logits.shape[:-1], 255, np.int32)
  for normalization in losses.NORMALIZATIONS:
    loss = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                    normalization=normalization)
    assert float(loss) == 0.0


def test_class_weights():
  logits, labels = _batch(seed=5)
  class_weights = [0.5, 2.0, 1.0, 3.0, 0.25]
  per_pixel = _numpy_cross_entropy(logits, labels)
  w = np.where(labels != 255,
               np.asarray(class_weights)[np.where(labels == 255, 0, labels)],
               0.0)
  got_sum = losses.segmentation_loss(
      jnp.asarray(logits), jnp.asarray(labels), normalization="sum",
      class_weights=class_weights)
  got_valid = losses.segmentation_loss(
      jnp.asarray(logits), jnp.asarray(labels), normalization="valid",
      class_weights=class_weights)
  np.testing.assert_allclose(float(got_sum),
                             (w * per_pixel).sum() / labels.shape[0],
                             rtol=1e-5)
  np.testing.assert_allclose(float(got_valid),
                             (w * per_pixel).sum() / w.sum(), rtol=1e-5)
  with pytest.raises(ValueError, match="class_weights"):
    losses.pixel_weights(jnp.asarray(labels), NUM_CLASSES,
                         class_weights=[1.0, 2.0])


def test_loss_sampling_keeps_a_fraction_p_and_sums_the_kept_pixels():
  rng = jax.random.PRNGKey(0)
  mask = np.asarray(losses.sample_keep_mask(rng, (4, 100, 100), 0.25))
  assert abs(mask.mean() - 0.25) < 0.01
  assert losses.sample_keep_mask(rng, (4, 10, 10), 1.0) is None
  with pytest.raises(ValueError, match="loss_sampling_p"):
    losses.sample_keep_mask(rng, (1, 2, 2), 0.0)

  logits, labels = _batch(seed=6)
  keep = np.asarray(losses.sample_keep_mask(rng, labels.shape, 0.5))
  got = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                                 normalization="valid",
                                 keep_mask=jnp.asarray(keep))
  per_pixel = _numpy_cross_entropy(logits, labels)
  kept = keep & (labels != 255)
  np.testing.assert_allclose(float(got), per_pixel[kept].mean(), rtol=1e-5)


def test_low_precision_logits_are_scored_in_float32():
  logits, labels = _batch(seed=7)
  ce = losses.pixel_cross_entropy(jnp.asarray(logits, jnp.bfloat16),
                                  jnp.asarray(labels))
  assert ce.dtype == jnp.float32
  want = _numpy_cross_entropy(
      np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32)),
      labels)
  valid = labels != 255
  np.testing.assert_allclose(np.asarray(ce)[valid], want[valid], rtol=1e-5,
                             atol=1e-5)


def test_unknown_normalization_is_rejected():
  logits, labels = _batch(seed=8)
  with pytest.raises(errors.UserError, match="loss_normalization"):
    losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels),
                             normalization="mean")
