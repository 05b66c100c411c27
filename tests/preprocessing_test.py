"""Tests of Preprocessing: the formula, bit for bit, wherever it writes."""

import numpy as np
from PIL import Image
import pytest

from fcn_jax.data import preprocessing as preprocessing_lib

PRESETS = [
    preprocessing_lib.CAFFE_VGG, preprocessing_lib.TORCHVISION,
    preprocessing_lib.Preprocessing("BGR", (1.5, -2.0, 100.0), 0.5,
                                    (2.0, 3.0, 0.7)),
    preprocessing_lib.Preprocessing("RGB", (0.0, 10.0, 0.5), 1.0,
                                    (1.0, 4.0, 1.0))]


def _formula(prep, image):
  """The class docstring's formula, step by step in float32."""
  x = np.asarray(image).astype(np.float32)
  if prep.channel_order == "BGR":
    x = x[..., ::-1]
  x = x * np.float32(prep.scale)
  x = x - np.asarray(prep.mean, np.float32)
  return x / np.asarray(prep.std, np.float32)


@pytest.mark.parametrize("prep", PRESETS)
def test_bit_identical_to_the_formula(prep):
  rng = np.random.default_rng(9)
  images = rng.integers(0, 256, (2, 13, 17, 3), np.uint8)
  for image in [images[0], images, images[1, ::2, ::-1], images[0, 0],
                images[0, 0, 0], images[0, :0],
                np.broadcast_to(images[0, 0, 0], (5, 6, 3)),
                images[1].astype(np.float64) + 0.25,
                Image.fromarray(images[1])]:
    got = prep(image)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _formula(prep, image))


@pytest.mark.parametrize("prep", PRESETS)
@pytest.mark.parametrize("columns", [slice(0, 17), slice(0, 34, 2)])
def test_out_is_written_in_place_and_nothing_else(prep, columns):
  # The top-left corner of a batch canvas (contiguous pixel rows), and a
  # view without contiguous rows.
  image = np.random.default_rng(9).integers(0, 256, (13, 17, 3), np.uint8)
  canvas = np.full((20, 40, 3), 7.0, np.float32)
  out = canvas[:13, columns]
  assert prep(image[:, ::-1], out=out) is out
  np.testing.assert_array_equal(canvas[:13, columns],
                                _formula(prep, image[:, ::-1]))
  written = np.zeros(canvas.shape[:2], bool)
  written[:13, columns] = True
  assert (canvas[~written] == 7).all()


def test_mismatched_out_is_refused():
  image = np.zeros((4, 5, 3), np.uint8)
  with pytest.raises(ValueError, match="out must be float32"):
    preprocessing_lib.CAFFE_VGG(image, out=np.zeros((4, 5, 3), np.float64))
  with pytest.raises(ValueError, match="out must be float32"):
    preprocessing_lib.CAFFE_VGG(image, out=np.zeros((5, 4, 3), np.float32))
  with pytest.raises(ValueError, match="expected RGB"):
    preprocessing_lib.CAFFE_VGG(np.zeros((4, 5), np.uint8))
