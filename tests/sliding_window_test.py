"""Sliding-window inference: coverage, averaging, agreement, bounded memory."""

import tracemalloc

import jax
import numpy as np
import pytest

from fcn_jax.data import preprocessing
from fcn_jax.inference import sliding_window
from tests import tiny_fcn  # pylint: disable=g-bad-import-order


def test_tile_starts_cover_every_pixel_and_end_flush():
  for size in (1, 7, 64, 100, 511, 512, 513, 1000):
    for window in (1, 16, 100, 512):
      for stride in sorted({1, max(1, window // 2), window * 3 // 4 or 1,
                            window}):
        starts = sliding_window.tile_starts(size, window, stride)
        assert starts[0] == 0 and list(starts) == sorted(set(starts))
        counts = sliding_window.coverage(size, window, starts)
        assert counts.min() >= 1
        assert starts[-1] + window >= size  # Flush (or past, when small).
        if size > window:
          assert starts[-1] + window == size
          assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
  assert sliding_window.tile_starts(8000, 512, 384)[-1] == 8000 - 512
  assert len(sliding_window.tile_starts(8000, 512, 384)) == 21
  with pytest.raises(ValueError, match="stride must be in"):
    sliding_window.tile_starts(100, 10, 11)


def _naive_average(image, fn, window, stride):
  """Every window scored alone; sums and counts over the whole image."""
  height, width = image.shape[:2]
  total, count = None, np.zeros((height, width, 1))
  for top in sliding_window.tile_starts(height, window, stride):
    for left in sliding_window.tile_starts(width, window, stride):
      tile = image[top:top + window, left:left + window].astype(np.float32)
      logits = fn(tile[None])[0]
      if total is None:
        total = np.zeros((height, width, logits.shape[-1]))
      total[top:top + window, left:left + window] += logits
      count[top:top + window, left:left + window] += 1
  return total / count


def _position_dependent(tiles):
  """Logits that depend on where a pixel is IN ITS WINDOW, so windows that
  overlap give different values and the average is tested."""
  _, h, w, _ = tiles.shape
  ramp = (np.arange(h)[:, None] * 0.1 + np.arange(w)[None, :] * 0.01)
  return np.concatenate([tiles, tiles[..., :1] * 0 + ramp[..., None]], -1)


def test_overlapping_logits_are_averaged_like_the_naive_loop():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (70, 95, 3), np.uint8)
  calls = []

  def fn(tiles):
    calls.append(tiles.shape)
    return _position_dependent(tiles)

  got = sliding_window.sliding_window_inference(
      image, fn, 32, 20, batch_size=3, return_logits=True)
  np.testing.assert_allclose(got, _naive_average(image, _position_dependent,
                                                 32, 20), rtol=1e-6)
  tiling = sliding_window.Tiling.create(70, 95, 32, 20)
  assert set(calls) == {(3, 32, 32, 3)}  # One shape: compiles once.
  assert len(calls) == -(-tiling.num_tiles // 3)
  labels = sliding_window.sliding_window_inference(
      image, fn, 32, 20, batch_size=3)
  np.testing.assert_array_equal(labels, np.argmax(got, -1))


def test_pointwise_model_gives_whole_image_labels_with_many_windows():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (90, 130, 3), np.uint8)
  weights = rng.normal(size=(3, 5)).astype(np.float32)
  pointwise = lambda x: np.tanh(x / 255.0 @ weights)
  whole = pointwise(image.astype(np.float32)[None])[0]
  got = sliding_window.sliding_window_inference(
      image, pointwise, 40, 30, batch_size=4, return_logits=True)
  np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      sliding_window.sliding_window_inference(image, pointwise, 40, 30),
      np.argmax(whole, -1))


@pytest.fixture(scope="module")
def fcn():
  model, variables = tiny_fcn.tiny_fcn("fcn8s", width_divisor=32)
  return jax.jit(lambda x: model.apply(variables, x))


def test_fcn_window_covering_the_image_is_whole_image_inference(fcn):
  image = tiny_fcn.random_image(np.random.default_rng(2), 40, 52)
  caffe = preprocessing.CAFFE_VGG
  whole = np.asarray(fcn(caffe(image)[None]))[0]
  exact = sliding_window.sliding_window_inference(
      image, fcn, 64, 48, preprocess=caffe, batch_size=1,
      pad_to_window=False, return_logits=True)
  np.testing.assert_allclose(exact, whole, rtol=0, atol=1e-5)
  # Padded to the 64x64 window (mean colour below/right): the network sees
  # the padding, so logits change near those edges. Stated tolerance: 95%
  # of the labels agree (measured 99.3% with this net and image).
  padded = sliding_window.sliding_window_inference(
      image, fcn, 64, 48, preprocess=caffe, batch_size=1)
  assert np.mean(padded == np.argmax(whole, -1)) >= 0.95


def test_working_memory_is_bounded_by_window_and_width_not_height():
  rng = np.random.default_rng(3)
  weights = rng.normal(size=(3, 8)).astype(np.float32)
  pointwise = lambda x: x @ weights
  peaks = {}
  for height in (600, 2400):
    image = rng.integers(0, 256, (height, 700, 3), np.uint8)
    tracemalloc.start()
    labels = sliding_window.sliding_window_inference(image, pointwise, 128,
                                                     96, batch_size=2)
    peaks[height] = tracemalloc.get_traced_memory()[1] - labels.nbytes
    tracemalloc.stop()
  estimate = sliding_window.peak_memory_bytes(0, 700, 128, 2, 8)
  full_logits = 2400 * 700 * 8 * 4
  assert peaks[2400] <= 1.5 * estimate < full_logits / 3
  assert peaks[2400] < 1.2 * peaks[600]  # 4x the rows, same working set.
