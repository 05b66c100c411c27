"""Tests of the grain input pipeline.

Images are painted with one colour per class (the VOC palette), so after any
transform each pixel's colour says which label it must carry: alignment is
checked against that, never against the pipeline's own output. Example
identity is encoded the same way (one constant label per example) to check
host shards, epochs and sampling.
"""

import io
import json
import logging

from etils import epath
import grain.checkpoint
import grain.multiprocessing
import numpy as np
from PIL import Image
import pytest

from fcn_jax.data import augmentations
from fcn_jax.data import batch_transforms
from fcn_jax.data import data_sources
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax import default_config
from fcn_jax import voc
from tests import helpers

CAFFE = preprocessing_lib.CAFFE_VGG
COLORS = voc.voc_colormap()[:21]


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def _record(label, image_id, image=None):
  """A record as the TFDS data source returns it (images still encoded)."""
  image = COLORS[label] if image is None else image
  return {"image": _png(image), "segmentation_mask": _png(label),
          "image_id": image_id.encode(), "height": label.shape[0],
          "width": label.shape[1], "label_source": b"test"}


def _block_label(rng, height, width, block=16):
  """Random labels constant on block x block squares."""
  blocks = rng.integers(0, 21, size=(-(-height // block), -(-width // block)))
  return np.kron(blocks, np.ones((block, block), np.int64))[
      :height, :width].astype(np.uint8)


def _source(records, synthetic=False):
  return data_sources.SplitSource(records, "test:split", synthetic)


def _constant_source(count, height=12, width=14):
  """Example k is all label k (k < 21) with k's colour."""
  return _source([_record(np.full((height, width), k, np.uint8), f"id{k}")
                  for k in range(count)])


def _config(**overrides):
  config = default_config.get_config()
  config.model.num_classes = 21
  config.dataset.name = "synthetic_shapes/tiny"
  config.dataset.train_split = "synthetic_train"
  config.dataset.eval_split = "synthetic_val"
  config.batch_size = 2
  config.eval_batch_size = 2
  config.input.update(dict(
      train_mode="epochs", crop_size=16, random_mirror=False,
      scale_range=(1.0, 1.0), eval_pad_size=64, buckets="none"))
  return helpers.with_overrides(config, overrides)


REFERENCE = {"input.train_mode": "reference", "input.crop_size": 0,
             "batch_size": 1}


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


# --------------------------------------------------------------------------
# Alignment of image and label after every transform.
# --------------------------------------------------------------------------


def _assert_aligned(rgb, label, margin=2):
  """Interior pixels (uniform label within ``margin``) have their colour."""
  rgb = np.asarray(rgb, np.int64)
  label = np.asarray(label)
  height, width = label.shape
  interior = np.zeros_like(label, bool)
  for y in range(margin, height - margin):
    for x in range(margin, width - margin):
      window = label[y - margin:y + margin + 1, x - margin:x + margin + 1]
      if label[y, x] != 255 and (window == label[y, x]).all():
        interior[y, x] = True
  assert interior.sum() > 0.1 * label.size, "too few interior pixels to test"
  np.testing.assert_allclose(rgb[interior], COLORS[label[interior]], atol=1)


@pytest.mark.parametrize("scale", [0.5, 0.77, 1.0, 1.6, 2.0])
def test_rescale_keeps_alignment(scale):
  label = _block_label(np.random.default_rng(1), 48, 56)
  image = np.asarray(augmentations.rescale(
      Image.fromarray(COLORS[label]), scale, augmentations.IMAGE_RESAMPLING))
  new_label = np.asarray(augmentations.rescale(
      Image.fromarray(label), scale, augmentations.LABEL_RESAMPLING))
  assert new_label.shape == (round(48 * scale), round(56 * scale))
  assert image.shape[:2] == new_label.shape
  assert set(np.unique(new_label)) <= set(np.unique(label))
  _assert_aligned(image, new_label)


def test_rescale_window_is_the_window_of_the_rescaled_image():
  label = _block_label(np.random.default_rng(8), 48, 56)
  for size, window in [((96, 112), (10, 20, 60, 90)),
                       ((30, 35), (0, 0, 30, 35)),
                       ((71, 83), (5, 7, 45, 50))]:
    image = np.asarray(augmentations.rescale_window(
        Image.fromarray(COLORS[label]), size, window,
        augmentations.IMAGE_RESAMPLING))
    window_label = np.asarray(augmentations.rescale_window(
        Image.fromarray(label), size, window, augmentations.LABEL_RESAMPLING))
    top, left, bottom, right = window
    assert window_label.shape == (bottom - top, right - left)
    assert image.shape == (bottom - top, right - left, 3)
    _assert_aligned(image, window_label)
    # The whole label resized by PIL, then cropped: the same map, up to
    # rounding at label boundaries.
    full_label = np.asarray(Image.fromarray(label).resize(size[::-1],
                                                          Image.NEAREST))
    agree = window_label == full_label[top:bottom, left:right]
    assert agree.mean() > 0.95


def _augment(record, seed, crop_size=0, mirror=False, scale=(1.0, 1.0)):
  augmentation = augmentations.TrainAugmentation(crop_size, mirror, scale)
  image, label = batch_transforms.augment_example(
      record, augmentation, CAFFE, np.random.default_rng(seed))
  return {"image": image, "label": label}


@pytest.mark.parametrize("crop_size,mirror,scale", [
    (0, False, (1.0, 1.0)), (16, False, (1.0, 1.0)), (0, True, (1.0, 1.0)),
    (20, True, (0.5, 2.0)), (0, False, (0.7, 1.4))])
def test_draws_come_in_the_documented_order(crop_size, mirror, scale):
  # The order the TrainAugmentation docstring promises (a new augmentation
  # must draw after these, or every existing run's stream changes).
  height, width = 30, 24
  geometry = augmentations.TrainAugmentation(crop_size, mirror, scale).draw(
      height, width, np.random.default_rng(11))
  rng = np.random.default_rng(11)
  if scale != (1.0, 1.0):
    factor = rng.uniform(*scale)
    height, width = (max(1, round(height * factor)),
                     max(1, round(width * factor)))
  flip = mirror and rng.random() < 0.5
  top = left = 0
  if crop_size:
    top = rng.integers(0, max(height - crop_size, 0) + 1)
    left = rng.integers(0, max(width - crop_size, 0) + 1)
  bottom = top + (min(height, crop_size) if crop_size else height)
  right = left + (min(width, crop_size) if crop_size else width)
  assert geometry == augmentations.Geometry((height, width),
                                            (top, left, bottom, right), flip)


def test_mirror_keeps_alignment_and_flips_about_half():
  label = _block_label(np.random.default_rng(2), 24, 40)
  record = _record(label, "x")
  flips = 0
  for seed in range(200):
    out = _augment(record, seed, mirror=True)
    _assert_aligned(CAFFE.invert(out["image"]), out["label"])
    if np.array_equal(out["label"], label[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out["label"], label)
  assert 70 <= flips <= 130


def test_crop_is_an_exact_window_of_the_image():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
  label = rng.integers(0, 21, size=(24, 32), dtype=np.uint8)
  record = _record(label, "x", image)
  offsets = set()
  for seed in range(30):
    out = _augment(record, seed, crop_size=16)
    matches = [(t, l) for t in range(24 - 16 + 1) for l in range(32 - 16 + 1)
               if np.array_equal(out["label"], label[t:t + 16, l:l + 16])]
    assert len(matches) == 1
    (top, left), = matches
    np.testing.assert_array_equal(
        out["image"], CAFFE(image[top:top + 16, left:left + 16]))
    offsets.add((top, left))
  assert len(offsets) > 10


def test_pad_when_smaller_than_crop():
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
  label = rng.integers(0, 21, size=(10, 12), dtype=np.uint8)
  out = _augment(_record(label, "x", image), 0, crop_size=16)
  assert out["image"].dtype == np.float32 and out["label"].dtype == np.int32
  np.testing.assert_array_equal(out["image"][:10, :12], CAFFE(image))
  np.testing.assert_array_equal(out["label"][:10, :12], label)
  pad = np.ones((16, 16), bool)
  pad[:10, :12] = False
  assert (out["label"][pad] == 255).all()
  assert (out["image"][pad] == 0).all()  # The mean colour after preprocessing.


def test_full_augmentation_keeps_alignment():
  rng = np.random.default_rng(5)
  sizes = set()
  for seed in range(40):
    height, width = (int(v) for v in rng.integers(30, 70, size=2))
    label = _block_label(rng, height, width)
    out = _augment(_record(label, "x"), seed, crop_size=40, mirror=True,
                   scale=(0.5, 2.0))
    assert out["image"].shape == (40, 40, 3) and out["label"].shape == (40, 40)
    pad = out["label"] == 255
    assert (out["image"][pad] == 0).all()
    real = ~pad
    rows, cols = real.any(axis=1).sum(), real.any(axis=0).sum()
    sizes.add((rows, cols))
    if rows > 8 and cols > 8:
      _assert_aligned(CAFFE.invert(out["image"])[:rows, :cols],
                      out["label"][:rows, :cols])
  assert len(sizes) > 3  # Scaling changed how much of the canvas is filled.


def test_scale_range_bounds_native_sizes():
  label = _block_label(np.random.default_rng(6), 40, 50)
  heights = []
  for seed in range(50):
    out = _augment(_record(label, "x"), seed, scale=(0.5, 1.5))
    heights.append(out["label"].shape[0])
    _assert_aligned(CAFFE.invert(out["image"]), out["label"])
  assert min(heights) >= 20 and max(heights) <= 60
  assert len(set(heights)) > 10


# --------------------------------------------------------------------------
# Training order: epochs, reference sampling, hosts, seeds, resuming.
# --------------------------------------------------------------------------


def _ids_from_batches(batches):
  return [int(b[0, 0]) for batch in batches for b in batch["label"]]


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_epoch_mode_gives_complete_passes(batch_size):
  source = _constant_source(20)
  iterator = helpers.train_iterator(
      _config(batch_size=batch_size, **{"input.crop_size": 8}), CAFFE,
      process_index=0, process_count=1, source=source)
  ids = _ids_from_batches(_take(iterator, 40 // batch_size + 1))
  first_pass, second_pass = ids[:20], ids[20:40]
  assert sorted(first_pass) == list(range(20))
  assert sorted(second_pass) == list(range(20))
  assert first_pass != second_pass  # A new permutation each pass.


@pytest.mark.parametrize("overrides,single_batch", [
    ({"input.scale_range": (0.7, 1.4), "input.random_mirror": True}, 4),
    (REFERENCE, 1),  # Native sizes: one image per host and step.
])
@pytest.mark.parametrize("process_count", [2, 4])
def test_hosts_together_yield_the_single_host_examples(
    overrides, single_batch, process_count):
  # Whatever the number of hosts, the run consumes one global sequence of
  # examples (with the same augmentation), host p holding part p of each
  # global batch. Native sizes need one image per host: the single host then
  # takes the same examples one per step.
  source = _source([_record(_block_label(np.random.default_rng(k), 20, 22),
                            f"id{k}") for k in range(7)])
  global_batch = 4 if single_batch == 4 else process_count
  single = _take(helpers.train_iterator(
      _config(**{**overrides, "batch_size": single_batch}), CAFFE,
      process_index=0, process_count=1, source=source),
                 12 // single_batch)
  per_host = [_take(helpers.train_iterator(
      _config(**{**overrides, "batch_size": global_batch}), CAFFE,
      process_index=p, process_count=process_count, source=source),
                    12 // global_batch) for p in range(process_count)]
  for key in ("image", "label"):
    want = np.concatenate([batch[key] for batch in single])
    got = np.concatenate([batches[i][key] for i in range(12 // global_batch)
                          for batches in per_host])
    np.testing.assert_array_equal(got, want)


def test_batches_have_fixed_shapes_and_dtypes():
  iterator = helpers.train_iterator(
      _config(batch_size=8, **{"input.scale_range": (0.5, 2.0),
                               "input.random_mirror": True}), CAFFE,
      process_index=1, process_count=2, source=_constant_source(12))
  for batch in _take(iterator, 5):
    assert batch["image"].shape == (4, 16, 16, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 16, 16)
    assert batch["label"].dtype == np.int32


def test_reference_mode_samples_uniformly_with_replacement():
  source = _constant_source(20)
  ids = []
  for process_index in range(2):
    iterator = helpers.train_iterator(
        _config(**{**REFERENCE, "batch_size": 2}), CAFFE,
        process_index=process_index, process_count=2, source=source)
    batches = _take(iterator, 400)
    for batch in batches[:3]:  # Native size, no augmentation.
      assert batch["image"].shape == (1, 12, 14, 3)
    ids.append(_ids_from_batches(batches))
    first = batches[0]
    k = int(first["label"][0, 0, 0])
    np.testing.assert_array_equal(
        first["image"][0], CAFFE(np.broadcast_to(COLORS[k], (12, 14, 3))))
  assert ids[0] != ids[1]  # The hosts draw different examples.
  for host_ids in ids:  # Each host draws from the whole split, uniformly.
    counts = np.bincount(host_ids, minlength=20)
    assert counts.size == 20 and counts.sum() == 400
    assert counts.min() >= 6 and counts.max() <= 40  # Mean 20.
    assert len(set(host_ids[:10])) < 10  # With replacement: early repeats.


def test_reference_mode_is_seeded_by_sampling_seed():
  source = _constant_source(15)

  def draws(sampling_seed, seed=0):
    iterator = helpers.train_iterator(
        _config(**REFERENCE, seed=seed,
                **{"input.sampling_seed": sampling_seed}), CAFFE,
        process_index=0, process_count=1, source=source)
    return _ids_from_batches(_take(iterator, 30))

  assert draws(1337) == draws(1337)
  assert draws(1337) == draws(1337, seed=5)  # Only sampling_seed matters.
  assert draws(1337) != draws(1338)


def test_same_seed_same_batches_other_seed_other_batches():
  source = _source([_record(_block_label(np.random.default_rng(k), 30, 26),
                            f"id{k}") for k in range(6)])
  config = dict(batch_size=2, **{"input.scale_range": (0.7, 1.4),
                                 "input.random_mirror": True})

  def batches(seed):
    return _take(helpers.train_iterator(
        _config(seed=seed, **config), CAFFE, process_index=0, process_count=1,
        source=source), 6)

  _assert_batches_equal(batches(3), batches(3))
  with pytest.raises(AssertionError):
    _assert_batches_equal(batches(3), batches(4))


@pytest.mark.parametrize("overrides", [
    {"input.scale_range": (0.7, 1.4), "input.random_mirror": True},
    REFERENCE,
])
def test_resume_from_saved_state_gives_the_same_next_batches(overrides):
  source = _source([_record(_block_label(np.random.default_rng(k), 20, 22),
                            f"id{k}") for k in range(5)])
  config = _config(**overrides)
  first = helpers.train_iterator(
      config, CAFFE, process_index=0, process_count=1, source=source)
  _take(first, 7)
  state = json.loads(json.dumps(first.get_state()))  # Survives JSON.
  expected = _take(first, 4)
  resumed = helpers.train_iterator(
      config, CAFFE, process_index=0, process_count=1, source=source)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 4), expected)


def test_resume_through_grains_orbax_checkpoint_handler(tmp_path):
  # How the training checkpoint stores the iterator (one JSON per process).
  source = _constant_source(9)
  config = _config(**{"input.random_mirror": True})
  first = helpers.train_iterator(
      config, CAFFE, process_index=0, process_count=1, source=source)
  _take(first, 5)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path),
               args=grain.checkpoint.CheckpointSave(first))
  expected = _take(first, 6)
  resumed = helpers.train_iterator(
      config, CAFFE, process_index=0, process_count=1, source=source)
  handler.restore(epath.Path(tmp_path),
                  args=grain.checkpoint.CheckpointRestore(resumed))
  _assert_batches_equal(_take(resumed, 6), expected)


def test_worker_processes_give_the_same_batches_and_resume():
  source = _source([_record(_block_label(np.random.default_rng(k), 20, 22),
                            f"id{k}") for k in range(7)])
  overrides = {"input.scale_range": (0.7, 1.4), "input.random_mirror": True}
  in_process = _take(helpers.train_iterator(
      _config(**overrides), CAFFE, process_index=0, process_count=1,
      source=source), 9)
  workers = helpers.train_iterator(
      _config(**overrides, **{"input.num_workers": 2}), CAFFE,
      process_index=0, process_count=1, source=source)
  try:
    _assert_batches_equal(_take(workers, 5), in_process[:5])
    state = json.loads(json.dumps(workers.get_state()))
  finally:
    workers.close()
  resumed = helpers.train_iterator(
      _config(**overrides, **{"input.num_workers": 2}), CAFFE,
      process_index=0, process_count=1, source=source)
  try:
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 4), in_process[5:])
  finally:
    resumed.close()


def test_worker_init_makes_the_canvases_in_shared_memory(monkeypatch):
  # What input.num_workers > 0 relies on to hand batches over without a copy.
  assert type(batch_transforms.image_canvas((2, 3))) is np.ndarray
  monkeypatch.setattr(batch_transforms, "_SHARED_MEMORY_CANVASES", False)
  batch_transforms.use_shared_memory_canvases(0, 2)
  image = batch_transforms.image_canvas((2, 3))
  label = batch_transforms.label_canvas((2, 3))
  for canvas, shape, pad in ((image, (2, 3, 3), 0), (label, (2, 3), 255)):
    assert isinstance(canvas, grain.multiprocessing.SharedMemoryArray)
    assert canvas.shape == shape and (canvas == pad).all()
    canvas.unlink_on_del()


# --------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------


def _eval_source(count):
  rng = np.random.default_rng(7)
  records, originals = [], {}
  for k in range(count):
    height, width = (int(v) for v in rng.integers(10, 30, size=2))
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 21, size=(height, width), dtype=np.uint8)
    label[0, 0] = 255  # A void pixel, as VOC has.
    records.append(_record(label, f"id{k}", image))
    originals[f"id{k}"] = (image, label)
  return _source(records), originals


@pytest.mark.parametrize("process_count,eval_batch_size", [(1, 4), (2, 4),
                                                           (3, 3)])
def test_eval_visits_each_example_once_with_padding(process_count,
                                                    eval_batch_size):
  source, originals = _eval_source(7)
  local_batch = eval_batch_size // process_count
  seen, lengths = [], set()
  for process_index in range(process_count):
    data = helpers.eval_iterator(
        _config(eval_batch_size=eval_batch_size,
                **{"input.eval_pad_size": 32}), CAFFE,
        process_index=process_index, process_count=process_count,
        source=source, include_ids=True)
    batches = list(data)
    assert len(batches) == len(data) == data.num_batches
    assert list(data) and len(list(data)) == len(batches)  # Re-iterable.
    lengths.add(len(batches))
    for batch in batches:
      assert batch["image"].shape == (local_batch, 32, 32, 3)
      assert batch["label"].shape == (local_batch, 32, 32)
      assert batch["valid"].dtype == bool
      for image, label, valid, image_id in zip(
          batch["image"], batch["label"], batch["valid"], batch["image_id"]):
        if not valid:
          assert image_id == "" and (label == 255).all() and (image == 0).all()
          continue
        seen.append(str(image_id))
        original_image, original_label = originals[str(image_id)]
        height, width = original_label.shape
        np.testing.assert_array_equal(image[:height, :width],
                                      CAFFE(original_image))
        np.testing.assert_array_equal(label[:height, :width], original_label)
        assert (label[height:] == 255).all() and (label[:, width:] == 255).all()
        assert (image[height:] == 0).all() and (image[:, width:] == 0).all()
  assert len(lengths) == 1  # Every host runs the same number of steps.
  assert sorted(seen) == sorted(originals)  # Each example exactly once.
  expected_batches = -(-(-(-7 // process_count)) // local_batch)
  assert lengths == {expected_batches}


def test_eval_exact_mode_native_sizes_batch_one():
  source, originals = _eval_source(7)
  seen = []
  for process_index in range(3):
    data = helpers.eval_iterator(
        _config(eval_batch_size=3, **{"input.eval_pad_size": 0}), CAFFE,
        process_index=process_index, process_count=3, source=source,
        include_ids=True)
    batches = list(data)
    assert len(batches) == 3
    first_shape = None
    for batch in batches:
      image_id = str(batch["image_id"][0])
      if batch["valid"][0]:
        original_image, original_label = originals[image_id]
        np.testing.assert_array_equal(batch["image"][0], CAFFE(original_image))
        np.testing.assert_array_equal(batch["label"][0], original_label)
        first_shape = first_shape or original_label.shape
        seen.append(image_id)
      else:  # Padding has the host's first shape: no new compilation.
        assert batch["label"].shape[1:] == first_shape
        assert (batch["label"] == 255).all()
  assert sorted(seen) == sorted(originals)


def test_eval_image_larger_than_pad_size_names_the_id():
  source, _ = _eval_source(3)
  data = helpers.eval_iterator(
      _config(**{"input.eval_pad_size": 12}), CAFFE, process_index=0,
      process_count=1, source=source)
  with pytest.raises(Exception, match=r"id0 is \d+x\d+, larger than"):
    list(data)


def test_eval_default_process_is_jax_process():
  source, originals = _eval_source(5)
  data = helpers.eval_iterator(_config(eval_batch_size=2),
                                             CAFFE, source=source)
  assert data.host_examples == data.num_examples == 5
  assert sum(int(b["valid"].sum()) for b in data) == 5


# --------------------------------------------------------------------------
# Config errors.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,match", [
    ({"batch_size": 4, "input.crop_size": 0}, "crop_size=0"),
    ({"input.train_mode": "reference"}, "train_mode='reference'"),
    ({**REFERENCE, "batch_size": 2, "input.random_mirror": True},
     "random_mirror=True"),
    ({"input.train_mode": "shuffled"}, "train_mode must be one of"),
    ({"input.scale_range": (1.5, 0.5)}, "scale_range"),
    ({"batch_size": 3}, "multiple of the process count"),
])
def test_train_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    helpers.train_iterator(
        _config(**overrides), CAFFE, process_index=0, process_count=2,
        source=_constant_source(4))


def test_missing_config_field_is_named():
  config = _config()
  del config.input["num_workers"]
  with pytest.raises(ValueError, match=r"config.input.num_workers is missing"):
    helpers.train_iterator(config, CAFFE, process_index=0,
                                         process_count=1,
                                         source=_constant_source(4))


def test_eval_exact_mode_needs_one_image_per_host():
  with pytest.raises(ValueError, match="eval_pad_size=0"):
    helpers.eval_iterator(
        _config(eval_batch_size=4, **{"input.eval_pad_size": 0}), CAFFE,
        process_index=0, process_count=2, source=_constant_source(4))


# --------------------------------------------------------------------------
# With the TFDS builders.
# --------------------------------------------------------------------------


def test_synthetic_dataset_end_to_end_and_logged_as_synthetic(tmp_path, caplog):
  config = _config(batch_size=4, eval_batch_size=4,
                   **{"dataset.data_dir": str(tmp_path)})
  with caplog.at_level(logging.INFO):
    train = helpers.train_iterator(
        config, CAFFE, process_index=0, process_count=1)
    batch = next(train)
    data = helpers.eval_iterator(
        config, CAFFE, process_index=0, process_count=1)
  assert batch["image"].shape == (4, 16, 16, 3)
  assert data.num_examples == 10 and len(data) == 3
  assert sum(int(b["valid"].sum()) for b in data) == 10
  lines = [r.getMessage() for r in caplog.records
           if "synthetic_shapes/tiny:" in r.getMessage()]
  assert len(lines) == 2
  assert all(line.startswith("[SYNTHETIC DATA") for line in lines)


def test_unprepared_voc_seg_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"python -m fcn_jax.prepare_data --dataset voc_seg"):
    data_sources.open_split("voc_seg", "seg11valid", str(tmp_path))


def test_unknown_split_lists_the_splits(tmp_path):
  with pytest.raises(ValueError, match="synthetic_train"):
    data_sources.open_split("synthetic_shapes/tiny", "train", str(tmp_path))
