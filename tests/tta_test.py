"""Tests of fcn_jax.inference.tta against naive NumPy loops and PIL."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from fcn_jax.inference import tta


def naive_resize(image, height, width):
  """Antialiased linear resize by definition, one output pixel at a time.

  Output pixel ``i`` is centred at input coordinate ``c = (i + 0.5) * f - 0.5``
  with ``f = n / out``; its value is the mean of the input weighted by the
  triangle ``max(0, 1 - |j - c| / r)``, ``r = max(f, 1)`` (the filter widens
  when shrinking), over the pixels inside the image.
  """
  image = np.asarray(image, np.float64)

  def along(x, out, axis):
    n = x.shape[axis]
    f = n / out
    r = max(f, 1.0)
    rows = []
    for i in range(out):
      c = (i + 0.5) * f - 0.5
      w = np.maximum(0.0, 1.0 - np.abs(np.arange(n) - c) / r)
      rows.append(np.tensordot(w / w.sum(), np.moveaxis(x, axis, 0), 1))
    return np.moveaxis(np.stack(rows), 0, axis)

  return along(along(image, height, 0), width, 1)


def test_resize_images_is_the_antialiased_linear_filter():
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, (13, 17, 3))
  for size in [(7, 5), (13, 17), (20, 31), (6, 40)]:
    got = np.asarray(tta.resize_images(image, *size))
    np.testing.assert_allclose(got, naive_resize(image, *size), atol=1e-3)
  # PIL's bilinear filter is the same triangle (it rounds to uint8).
  pixels = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
  pil = np.asarray(Image.fromarray(pixels).resize((23, 17), Image.BILINEAR))
  ours = np.asarray(tta.resize_images(pixels, 17, 23))
  assert np.abs(ours - pil).max() <= 1.0


def test_resize_logits_is_linear_with_clamped_edges():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  got = np.asarray(tta.resize_logits(jnp.asarray(logits), 11, 4))
  want = np.zeros((2, 11, 4, 3))
  for i in range(11):
    for j in range(4):
      u = min(max((i + 0.5) * 5 / 11 - 0.5, 0), 4)
      v = min(max((j + 0.5) * 7 / 4 - 0.5, 0), 6)
      i0, j0 = int(np.floor(u)), int(np.floor(v))
      i1, j1 = min(i0 + 1, 4), min(j0 + 1, 6)
      a, b = u - i0, v - j0
      want[:, i, j] = ((1 - a) * (1 - b) * logits[:, i0, j0]
                       + (1 - a) * b * logits[:, i0, j1]
                       + a * (1 - b) * logits[:, i1, j0]
                       + a * b * logits[:, i1, j1])
  np.testing.assert_allclose(got, want, atol=1e-5)


def _forward(x):
  """A position-dependent, non-linear 'network' keeping the input size."""
  h, w = x.shape[1:3]
  ramp = jnp.arange(w, dtype=jnp.float32)[None, None, :, None]
  return jnp.tanh(x[..., :2] * 0.01) + ramp * 0.1 + h


def test_variants_are_averaged_as_defined():
  rng = np.random.default_rng(2)
  images = rng.normal(0, 50, (2, 12, 18, 3)).astype(np.float32)
  aug = tta.TestTimeAugmentation(flip=True, scales=(1.0, 0.5, 1.5))
  got = np.asarray(jax.jit(lambda x: aug(_forward, x))(images))
  want = 0
  for s in (1.0, 0.5, 1.5):
    size = (round(12 * s), round(18 * s))
    scaled = naive_resize(images.transpose(1, 2, 0, 3).reshape(12, 18, -1),
                          *size).reshape(*size, 2, 3).transpose(2, 0, 1, 3)
    for flip in (False, True):
      x = scaled[:, :, ::-1] if flip else scaled
      y = np.asarray(_forward(jnp.asarray(x, jnp.float32)))
      y = y[:, :, ::-1] if flip else y
      want = want + np.asarray(tta.resize_logits(y, 12, 18))
  np.testing.assert_allclose(got, want / 6, atol=1e-4)
  identity = tta.TestTimeAugmentation()
  assert identity.is_identity and identity.num_variants == 1
  np.testing.assert_array_equal(np.asarray(identity(_forward, images)),
                                np.asarray(_forward(images)))


def test_bad_scales_are_refused():
  with pytest.raises(ValueError, match="positive"):
    tta.TestTimeAugmentation(scales=(1.0, 0.0))
  with pytest.raises(ValueError, match="0.75,1.0,1.25"):
    tta.from_flags(scales="big")
  assert tta.from_flags(True, "0.5, 1").scales == (0.5, 1.0)
