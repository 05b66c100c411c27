"""Tests of fcn_jax.inference.predictor: modes, buckets, TTA and shift-and-stitch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.inference import predictor as predictor_lib
from fcn_jax.inference import shift_stitch
from fcn_jax.inference import tta
import tta_test  # naive_resize: the antialiased linear filter by definition.
from fcn_jax.data.preprocessing import CAFFE_VGG
from tests.tiny_fcn import random_image, tiny_fcn
from tests.helpers import jit_apply


@pytest.fixture(scope="module")
def fcn32s():
  return tiny_fcn("fcn32s")


def _direct(model, variables, image):
  """Logits of one image by a plain model.apply at its native size."""
  x = jnp.asarray(CAFFE_VGG(image)[None])
  return np.asarray(jit_apply(model, variables, x, train=False))[0]


def test_bucket_shape_rounds_up_or_picks_the_smallest_fitting_size():
  assert predictor_lib.bucket_shape(37, 50, 32) == (64, 64)
  assert predictor_lib.bucket_shape(64, 65, 32) == (64, 96)
  assert predictor_lib.bucket_shape(500, 334, 32) == (512, 352)
  sizes = [(512, 512), (384, 512), (512, 384)]
  assert predictor_lib.bucket_shape(375, 500, sizes) == (384, 512)
  assert predictor_lib.bucket_shape(500, 375, sizes) == (512, 384)
  assert predictor_lib.bucket_shape(400, 400, sizes) == (512, 512)
  assert predictor_lib.bucket_shape(600, 10, sizes) == (608, 32)  # Fallback.
  assert predictor_lib.parse_buckets("64") == 64
  assert predictor_lib.parse_buckets("384x512,512x384") == [(384, 512),
                                                         (512, 384)]
  with pytest.raises(ValueError, match="384x512"):
    predictor_lib.parse_buckets("big")


def test_resize_logits_is_linear_with_aligned_pixel_centres():
  h, w, height, width = 5, 7, 13, 4
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  ramp = np.stack([2.0 * rows + 3.0 * cols, -rows], -1).astype(np.float32)
  out = tta.resize_logits(ramp, height, width)
  u = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
  v = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
  np.testing.assert_allclose(out[..., 0], 2 * u[:, None] + 3 * v[None, :],
                             atol=1e-5)
  np.testing.assert_allclose(out[..., 1], -u[:, None] + 0 * v, atol=1e-5)
  np.testing.assert_array_equal(tta.resize_logits(ramp, h, w), ramp)


def test_exact_mode_equals_the_model_at_native_size(fcn32s):
  model, variables = fcn32s
  rng = np.random.default_rng(1)
  images = [random_image(rng, *s) for s in [(37, 50), (21, 30), (37, 50)]]
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact",
                                  batch_size=2)
  logits = predictor.predict_logits(images)
  for image, got in zip(images, logits):
    np.testing.assert_allclose(got, _direct(model, variables, image),
                               atol=1e-4)
  assert predictor.num_compiles == 2  # One per distinct size.
  labels = predictor.predict(images)
  assert labels[0].dtype == np.uint8
  np.testing.assert_array_equal(labels[1], logits[1].argmax(-1))


def test_fast_mode_pads_to_buckets_and_compiles_once_per_bucket(fcn32s):
  model, variables = fcn32s
  rng = np.random.default_rng(2)
  sizes = [(37, 50), (40, 60), (64, 64), (33, 70), (50, 33)]
  images = [random_image(rng, *s) for s in sizes]
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="fast",
                                  buckets=32, batch_size=3)
  logits = predictor.predict_logits(images)
  # Buckets: 64x64 (four images, two batches) and 64x96 (one).
  assert predictor.num_compiles == 2
  for image, got in zip(images, logits):
    h, w = image.shape[:2]
    bh, bw = predictor_lib.bucket_shape(h, w, 32)
    padded = np.zeros((1, bh, bw, 3), np.float32)
    padded[0, :h, :w] = CAFFE_VGG(image)
    want = np.asarray(jit_apply(model, variables, jnp.asarray(padded)))[0, :h, :w]
    assert got.shape == (h, w, 21)
    np.testing.assert_allclose(got, want, atol=1e-4)
  # An image that fills its bucket is not padded: same as exact.
  np.testing.assert_allclose(logits[2], _direct(model, variables, images[2]),
                             atol=1e-4)
  # The padding is seen by the net: fast differs from exact elsewhere.
  assert np.abs(logits[0] - _direct(model, variables, images[0])).max() > 1e-3
  # Batch composition does not change results.
  single = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="fast",
                               buckets=[(64, 64), (64, 96)], batch_size=1)
  for a, b in zip(single.predict_logits(images), logits):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_flip_and_scales_average_the_variants(fcn32s):
  model, variables = fcn32s
  image = random_image(np.random.default_rng(3), 30, 44)
  direct = lambda im: _direct(model, variables, im)
  flipped = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact",
                                flip=True).predict_logits([image])[0]
  want = (direct(image) + direct(image[:, ::-1])[:, ::-1]) / 2
  np.testing.assert_allclose(flipped, want, atol=1e-4)
  scaled = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact",
                               scales=(1.0, 0.5)).predict_logits([image])[0]
  half = tta_test.naive_resize(image, 15, 22)
  want = (direct(image) + tta.resize_logits(direct(half), 30, 44)) / 2
  np.testing.assert_allclose(scaled, want, atol=1e-4)


def _shift_np(images, dy, dx):
  """The paper's shifted input: x'[i, j] = x[i + dy, j + dx], zero beyond."""
  out = np.zeros_like(images)
  out[:, :images.shape[1] - dy, :images.shape[2] - dx] = images[:, dy:, dx:]
  return out


def _stitch_by_definition(apply_fn, images, f, stride):
  """Every output pixel taken from the pass whose shift aligns it."""
  step = stride // f
  passes = {}
  for dy in range(f):
    for dx in range(f):
      passes[dy, dx] = np.asarray(
          apply_fn(jnp.asarray(_shift_np(images, step * dy, step * dx))))
  n, h, w, k = passes[0, 0].shape
  out = np.zeros((n, f * h, f * w, k), np.float32)
  for i in range(f * h):
    for j in range(f * w):
      out[:, i, j] = passes[i % f, j % f][:, i // f, j // f]
  return out


def test_shift_and_stitch_matches_its_definition_on_a_strided_conv():
  rng = np.random.default_rng(4)
  kernel = jnp.asarray(rng.normal(size=(4, 4, 2, 3)), jnp.float32)
  conv = lambda x: jax.lax.conv_general_dilated(
      x, kernel, (3, 3), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  images = rng.normal(size=(2, 13, 11, 2)).astype(np.float32)
  got = np.asarray(shift_stitch.shift_and_stitch(conv, jnp.asarray(images), 3))
  want = _stitch_by_definition(conv, images, 3, 3)
  assert got.shape == (2, 12, 9, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_shift_and_stitch_matches_its_definition_on_fcn_scores():
  model, variables = tiny_fcn("fcn32s", width_divisor=32)
  images = CAFFE_VGG(random_image(np.random.default_rng(5), 40, 24)[None])
  coarse = lambda x: shift_stitch.coarse_scores(model, variables, x)
  # f = 2 on stride 32: passes shifted by 0 and 16 pixels, stride 16 out.
  got = np.asarray(shift_stitch.shift_and_stitch(coarse, jnp.asarray(images), 2,
                                              stride=32))
  want = _stitch_by_definition(coarse, images, 2, 32)
  assert got.shape == (1, 4, 2, 21)  # score_fr is 2x1 for 40x24.
  np.testing.assert_allclose(got, want, atol=1e-4)


# Input coordinate of the first coarse cell, (k - 1) / 2 - crop offset, from the
# final Deconvolution(k) and crop offsets of docs/reference.md §2.2/§3.
CENTERS = {"fcn32s": (32, 31.5 - 19), "fcn16s": (16, 15.5 - 27),
           "fcn8s": (8, 7.5 - 31), "fcn8s_atonce": (8, 7.5 - 31)}


@pytest.mark.parametrize("name", ["fcn32s", "fcn8s"])
def test_stitching_with_f1_is_the_bilinear_upsampler(name):
  """With f = 1 the stitched scores equal the model's deconvolution output
  wherever two coarse cells surround the pixel (the deconv differs only where
  the bilinear kernel runs off the coarse map)."""
  model, variables = tiny_fcn(name)
  stride, center = CENTERS[name]
  head = shift_stitch.coarse_head(model)
  assert (head.stride, head.center) == (stride, center)
  image = random_image(np.random.default_rng(6), 45, 70)
  x = jnp.asarray(CAFFE_VGG(image)[None])
  got = np.asarray(shift_stitch.stitched_scores(model, variables, x, 1))[0]
  want = np.asarray(jit_apply(model, variables, x))[0]
  cells = np.asarray(shift_stitch.coarse_scores(model, variables, x)).shape[1:3]
  inside = lambda n, size: ((np.arange(size) >= center)
                            & (np.arange(size) <= center + stride * (n - 1)))
  mask = inside(cells[0], 45)[:, None] & inside(cells[1], 70)[None, :]
  assert mask.mean() > 0.3
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-4)


def test_predictor_shift_stitch_gives_dense_scores():
  model, variables = tiny_fcn("fcn8s", width_divisor=32)
  image = random_image(np.random.default_rng(7), 20, 28)
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact",
                                  shift_stitch=2)
  got = predictor.predict_logits([image])[0]
  x = jnp.asarray(CAFFE_VGG(image)[None])
  # By definition: stride-4 stitched map, cell m at 4 m - 23.5, interpolated.
  coarse = lambda y: shift_stitch.coarse_scores(model, variables, y)
  stitched = _stitch_by_definition(coarse, np.asarray(x), 2, 8)[0]
  rows, cols = (np.arange(20) + 23.5) / 4, (np.arange(28) + 23.5) / 4
  want = tta.linear_resample(
      tta.linear_resample(stitched, rows, 0), cols, 1)
  np.testing.assert_allclose(got, want, atol=1e-4)
  with pytest.raises(ValueError, match="divide"):
    predictor_lib.Predictor(model, variables, CAFFE_VGG, shift_stitch=3)


def test_bad_images_are_rejected(fcn32s):
  predictor = predictor_lib.Predictor(*fcn32s, CAFFE_VGG)
  with pytest.raises(ValueError, match="uint8 RGB"):
    predictor.predict_logits([np.zeros((8, 8), np.uint8)])
  with pytest.raises(ValueError, match="mode"):
    predictor_lib.Predictor(*fcn32s, CAFFE_VGG, mode="slow")


def test_shift_and_stitch_on_a_two_headed_net_is_a_user_error():
  """One line from the command (a UserError), not a traceback."""
  from fcn_jax import errors  # pylint: disable=g-import-not-at-top
  model, variables = tiny_fcn("siftflow_fcn32s", width_divisor=64)
  with pytest.raises(errors.UserError, match="one-trunk, one-head nets; "
                     "siftflow_fcn32s has two heads"):
    predictor_lib.Predictor(model, variables, CAFFE_VGG, shift_stitch=2)
