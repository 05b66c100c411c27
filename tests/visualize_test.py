"""Tests of fcn_jax.visualize, with the reference demo image as golden data."""

import pathlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fcn_jax import errors
from fcn_jax.evaluation import metrics
from fcn_jax import visualize
from fcn_jax import voc

DEMO = pathlib.Path(__file__).parent / "fixtures" / "demo"

# VOC devkit colours (docs/reference.md §12 and the devkit's labelcolormap).
BACKGROUND, AEROPLANE, BICYCLE, PERSON = (0, 0, 0), (128, 0, 0), (0, 128, 0), \
    (192, 128, 128)
VOID = (224, 224, 192)


def _rgb(path):
  return np.asarray(Image.open(path).convert("RGB"))


def test_demo_output_decodes_to_the_spec_class_counts():
  labels = visualize.read_label_png(DEMO / "output.png")
  values, counts = np.unique(labels, return_counts=True)
  # docs/reference.md §12: background 74,268, bicycle 42,851, person 49,881
  # pixels.
  assert dict(zip(values.tolist(), counts.tolist())) == {
      0: 74268, 2: 42851, 15: 49881}
  assert labels.shape == (500, 334)


def test_demo_label_reads_as_palette_indices():
  labels = visualize.read_label_png(DEMO / "label.png")
  values, counts = np.unique(labels, return_counts=True)
  assert dict(zip(values.tolist(), counts.tolist())) == {
      0: 54389, 2: 34183, 15: 61143, 255: 17285}


def test_demo_output_scores_the_spec_metrics():
  labels = visualize.read_label_png(DEMO / "label.png")
  prediction = visualize.read_label_png(DEMO / "output.png")
  hist = np.asarray(metrics.confusion_matrix(labels, prediction, 21))
  assert hist.sum() == 149715  # Valid (non-255) pixels, docs/reference.md §12.
  result = metrics.segmentation_metrics(hist, list(voc.VOC_CLASSES))
  assert round(result["pixel_acc"], 4) == 0.8425
  assert round(result["mean_acc"], 4) == 0.8455
  assert round(result["mean_iu"], 4) == 0.7196
  assert round(result["fw_iu"], 4) == 0.7274
  per_class = result["per_class_iu"]
  assert round(per_class["background"], 4) == 0.7773
  assert round(per_class["bicycle"], 4) == 0.6621
  assert round(per_class["person"], 4) == 0.7195


def test_palette_png_round_trips_the_demo_output(tmp_path):
  labels = visualize.read_label_png(DEMO / "output.png")
  path = tmp_path / "output.png"
  visualize.write_label_png(path, labels)
  with Image.open(path) as image:
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), labels)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                  _rgb(DEMO / "output.png"))
  np.testing.assert_array_equal(visualize.read_label_png(path), labels)


def test_palette_has_the_devkit_colours(tmp_path):
  labels = np.array([[0, 1, 2], [15, 255, 255]], np.uint8)
  path = tmp_path / "labels.png"
  visualize.write_label_png(path, labels)
  colors = _rgb(path)
  assert [tuple(c) for c in colors[0]] == [BACKGROUND, AEROPLANE, BICYCLE]
  assert [tuple(c) for c in colors[1]] == [PERSON, VOID, VOID]
  np.testing.assert_array_equal(visualize.colorize(labels), colors)


def test_unknown_colour_is_an_error_naming_it():
  rgb = np.zeros((4, 4, 3), np.uint8)
  rgb[0, 0] = (1, 2, 3)
  with pytest.raises(errors.UserError, match=r"\(1, 2, 3\): 1 px"):
    visualize.colors_to_labels(rgb)


def test_label_values_outside_a_palette_are_rejected():
  with pytest.raises(ValueError, match="0, 255"):
    visualize.colorize(np.array([[300]]))


def test_unreadable_label_file_names_the_file(tmp_path):
  path = tmp_path / "broken.png"
  path.write_bytes(b"not a png")
  with pytest.raises(errors.UserError, match="broken.png"):
    visualize.read_label_png(path)


def test_overlay_blends_and_lists_present_classes():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
  labels = np.zeros((60, 80), np.uint8)
  labels[10:30, 10:40] = 15
  labels[40:, 50:] = 2
  alpha = 0.6
  picture = np.asarray(visualize.overlay(image, labels, alpha=alpha))
  # A legend panel on the right (the canvas grows if the list is taller).
  assert picture.shape[0] >= 60 and picture.shape[1] > 80
  blended = picture[:60, :80].astype(float)
  # Objects: (1 - alpha) * image + alpha * colour; background: alpha / 2.
  expect = (1 - alpha) * image[20, 20] + alpha * np.array(PERSON)
  np.testing.assert_allclose(blended[20, 20], expect, atol=0.5)
  expect = (1 - alpha / 2) * image[0, 0] + alpha / 2 * np.array(BACKGROUND)
  np.testing.assert_allclose(blended[0, 0], expect, atol=0.5)
  # Class boundaries are outlined in the full class colour, on both sides.
  assert tuple(picture[20, 10]) == PERSON
  assert tuple(picture[20, 9]) == BACKGROUND
  assert tuple(picture[45, 50]) == BICYCLE
  # The legend shows swatches of exactly the present classes.
  legend = {tuple(c) for c in picture[:, 80:].reshape(-1, 3)}
  assert {PERSON, BICYCLE, BACKGROUND} <= legend
  assert AEROPLANE not in legend
  assert visualize.overlay(image, labels, legend=False).size == (80, 60)
  plain = np.asarray(visualize.overlay(image, labels, alpha, outline=False))
  expect = (1 - alpha) * image[20, 10] + alpha * np.array(PERSON)
  np.testing.assert_allclose(plain[20, 10], expect, atol=0.5)


def test_overlay_rejects_mismatched_sizes():
  with pytest.raises(ValueError, match="differ in size"):
    visualize.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)))


def _matrix_top_left(image, cell):
  """Finds the heat map by its 100% cell at (0, 0): the largest patch of the
  darkest colour (the colour bar's top has a thin strip of it too)."""
  patches, count = ndimage.label(
      (image == visualize.CONFUSION_HIGH).all(-1))
  assert count >= 1
  sizes = ndimage.sum(np.ones(patches.shape), patches, range(1, count + 1))
  rows, cols = ndimage.find_objects(patches)[int(np.argmax(sizes))]
  # One cell in size (the frame may cover a pixel of its top and left edge).
  assert abs((rows.stop - rows.start) - cell) <= 2
  assert abs((cols.stop - cols.start) - cell) <= 2
  return rows.stop - cell, cols.stop - cell


def test_confusion_matrix_image_colours_rows_by_fraction():
  hist = np.zeros((3, 3))
  hist[0, 0] = 10           # Class 0: all right.
  hist[2, 0] = hist[2, 2] = 5  # Class 2: half right; class 1 absent.
  norm = visualize.normalize_confusion(hist)
  np.testing.assert_allclose(norm[0], [1, 0, 0])
  assert np.isnan(norm[1]).all()
  np.testing.assert_allclose(norm[2], [0.5, 0, 0.5])
  cell = 30
  names = ["a", "b", "c"]
  image = np.asarray(visualize.confusion_matrix_image(hist, names, cell=cell))
  top, left = _matrix_top_left(image, cell)
  corner = lambda i, j: image[top + i * cell + 3, left + j * cell + 3]
  low = np.array(visualize.CONFUSION_LOW)
  high = np.array(visualize.CONFUSION_HIGH)
  assert tuple(corner(0, 1)) == tuple(low)                          # 0%.
  assert tuple(corner(1, 1)) == visualize.CONFUSION_ABSENT          # Absent.
  for j in (0, 2):                                                  # 50%.
    np.testing.assert_allclose(corner(2, j), (low + high) / 2, atol=1.5)
  # A colour bar right of the matrix: a gradient of many shades of blue.
  right = image[:, left + 3 * cell + 2:].reshape(-1, 3).astype(int)
  assert len({tuple(c) for c in right if c[2] - c[0] > 20}) > 40
  # Class names and axis labels left of and below the matrix.
  ink = lambda region: (region.astype(int).sum(-1) < 300).any()
  assert ink(image[top:top + 3 * cell, :left - 2])
  assert ink(image[top + 3 * cell + 2:, left:left + 3 * cell])
  # The title goes above the matrix, where nothing is drawn otherwise.
  assert not ink(image[:top - 2, left:left + 3 * cell])
  titled = np.asarray(visualize.confusion_matrix_image(
      hist, names, cell=cell, title="mean IU 50%"))
  top, left = _matrix_top_left(titled, cell)
  assert ink(titled[:top - 2, left:left + 3 * cell])


def test_confusion_matrix_image_rejects_mismatched_names():
  with pytest.raises(ValueError, match="2 class names for 3 classes"):
    visualize.confusion_matrix_image(np.eye(3), ["a", "b"])
  with pytest.raises(ValueError, match="square"):
    visualize.confusion_matrix_image(np.ones((2, 3)), ["a", "b"])
