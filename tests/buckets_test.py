"""Shape buckets: the choice of buckets and the bucketed input pipeline.

The choice is checked against a brute-force search over every candidate
set; the pipeline against the per-shape (``buckets='none'``) pipeline, which
yields the same examples one at a time at native size.
"""

import io
import itertools

import numpy as np
from PIL import Image
import pytest

from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax.data import buckets
from fcn_jax.data import data_sources
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.data import sampling
from tests import helpers

CAFFE = preprocessing_lib.CAFFE_VGG


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def mixed_source(count, seed=0, low=20, high=70, sizes=None):
  """Records of random sizes in [low, high) (or ``sizes`` in turn), random
  pixels and labels."""
  rng = np.random.default_rng(seed)
  records = []
  for k in range(count):
    height, width = (rng.integers(low, high, size=2) if sizes is None
                     else sizes[k % len(sizes)])
    height, width = int(height), int(width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (height, width), dtype=np.uint8)
    label[0, 0] = 255
    records.append({"image": _png(image), "segmentation_mask": _png(label),
                    "image_id": f"id{k}".encode(), "height": height,
                    "width": width, "label_source": b"test"})
  return data_sources.SplitSource(records, "test:mixed", False)


def pipeline_config(**overrides):
  config = default_config.get_config()
  config.model.num_classes = 21
  config.dataset.update(dict(name="test", train_split="train",
                             eval_split="val"))
  return helpers.with_overrides(config, overrides)


# --------------------------------------------------------------------------
# Choosing buckets.
# --------------------------------------------------------------------------


def _padding(sizes, chosen):
  """Padded pixels, each image at its smallest fitting bucket (naive)."""
  total = 0
  for h, w in sizes:
    total += min(bh * bw for bh, bw in chosen if bh >= h and bw >= w) - h * w
  return total


def _partitions(items):
  """Every partition of ``items`` into non-empty groups."""
  if not items:
    yield []
    return
  first, rest = items[0], items[1:]
  for partition in _partitions(rest):
    yield [[first], *partition]
    for i, group in enumerate(partition):
      yield partition[:i] + [[first, *group]] + partition[i + 1:]


def _optimal_padding(sizes, k):
  """The fewest padded pixels with at most ``k`` buckets, by brute force
  over every grouping of the distinct sizes into at most ``k`` groups, each
  at its (max height, max width): independent of choose_buckets' candidates
  and search."""
  distinct, counts = np.unique(sizes, axis=0, return_counts=True)
  best = min(
      sum(counts[i] * distinct[group, 0].max() * distinct[group, 1].max()
          for group in partition for i in group)
      for partition in _partitions(list(range(len(distinct))))
      if len(partition) <= k)
  return best - (sizes[:, 0] * sizes[:, 1]).sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auto_buckets_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  distinct = rng.integers(20, 70, (7, 2))
  sizes = distinct[rng.integers(0, len(distinct), 12)]
  for k in (1, 2, 3, 4):
    chosen = buckets.choose_buckets(sizes, k)
    assert len(chosen) <= k
    got = _padding(sizes, chosen)  # Also: every image fits a bucket.
    assert got == _optimal_padding(sizes, k)  # An exhaustive search.
    assert buckets.padding_overhead(sizes, chosen) == pytest.approx(
        got / (sizes[:, 0] * sizes[:, 1]).sum())
    assert (np.bincount(buckets.assign(sizes, chosen),
                        minlength=len(chosen)) > 0).all()  # Each one used.


def test_the_largest_bucket_need_not_hold_the_largest_height_and_width():
  # Portraits and landscapes: no image is 500x500, so two buckets hold all
  # with no padding (choose_buckets forced 500x500 in before).
  sizes = np.asarray([(375, 500)] * 5 + [(500, 375)] * 4 + [(300, 400)] * 2)
  assert buckets.choose_buckets(sizes, 2) == ((375, 500), (500, 375))
  assert buckets.choose_buckets(sizes, 3) == (
      (300, 400), (375, 500), (500, 375))
  assert buckets.choose_buckets(sizes, 4) == (  # No unused fourth.
      (300, 400), (375, 500), (500, 375))


@pytest.mark.parametrize("seed", [0, 1])
def test_local_search_beyond_the_exhaustive_limit(seed, monkeypatch):
  """Where every set is too many to try, the greedy choice and its local
  search still hold every image, use every bucket, and come within a few
  percent of the optimum (on these cases, the optimum itself)."""
  monkeypatch.setattr(buckets, "EXACT_SEARCH_LIMIT", 0)
  rng = np.random.default_rng(seed)
  distinct = rng.integers(20, 70, (7, 2))
  sizes = distinct[rng.integers(0, len(distinct), 12)]
  for k in (2, 3, 4):
    chosen = buckets.choose_buckets(sizes, k)
    assert len(chosen) <= k
    assert _padding(sizes, chosen) == _optimal_padding(sizes, k)
    assert (np.bincount(buckets.assign(sizes, chosen),
                        minlength=len(chosen)) > 0).all()


def test_voc_like_mix_gets_the_obvious_buckets():
  sizes = np.asarray([(375, 500)] * 42 + [(333, 500)] * 15 + [(500, 375)] * 8
                     + [(500, 500)] + [(281, 500)] * 3 + [(500, 333)] * 2)
  assert buckets.choose_buckets(sizes, 4) == (
      (333, 500), (375, 500), (500, 375), (500, 500))


def test_parse_and_explicit_buckets():
  assert buckets.parse("auto") == "auto"
  assert buckets.parse("none") == buckets.parse("") == buckets.parse(()) == \
      "none"
  assert buckets.parse("64x32, 32x32") == ((32, 32), (64, 32))
  assert buckets.parse([(64, 64), (32, 48)]) == ((32, 48), (64, 64))
  for bad in ("big", "32x", "0x32", "48x-48", ((32,),)):
    with pytest.raises(errors.UserError, match="config.input.buckets"):
      buckets.parse(bad)
  sizes = np.asarray([(20, 30), (40, 30)])
  with pytest.raises(ValueError, match=r"1 image\(s\) .* fit no bucket"):
    buckets.resolve("32x32", 4, sizes)
  assert buckets.resolve("64x64,32x32", 4, sizes) == ((32, 32), (64, 64))
  assert buckets.bucket_of_batch(sizes, ((32, 32), (64, 64))) == (64, 64)
  assert buckets.bucket_of_batch(sizes[:1], ((32, 32), (64, 64))) == (32, 32)


def test_one_size_parser_names_the_flag_and_the_fix():
  assert buckets.parse_size(" 384X512 ", "--size") == (384, 512)
  assert buckets.parse_size("500", "--native_size", square=True) == (500, 500)
  assert buckets.parse_sizes("64x32,32x32,64x32", "--buckets") == (
      (32, 32), (64, 32))
  for bad in ("0x5", "48x-48", "abc", "500", "1x2x3", "", "4.5x3"):
    with pytest.raises(errors.UserError) as raised:
      buckets.parse_size(bad, "--buckets")
    assert str(raised.value) == (
        f"--buckets: {bad!r} is not a size; give HxW with positive whole "
        "numbers, such as 384x512")


def test_read_sizes_reads_the_height_and_width_features():
  source = mixed_source(5)
  sizes = buckets.read_sizes(source.records)
  for record, (h, w) in zip(source.records, sizes):
    label = np.asarray(Image.open(io.BytesIO(record["segmentation_mask"])))
    assert label.shape == (h, w)


# --------------------------------------------------------------------------
# The bucketed training pipeline.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("train_mode", ["reference", "epochs"])
def test_bucketed_training_batches_hold_the_native_examples(train_mode):
  """A global batch of 4 over 2 hosts: both hosts pad to one bucket that
  fits all 4 images; each example is the native pipeline's (same global
  position), top-left, with label 255 and image 0 beyond it."""
  source = mixed_source(9)
  native = helpers.train_iterator(
      pipeline_config(**{"input.buckets": "none",
                         "input.train_mode": train_mode}), CAFFE,
      process_index=0, process_count=1, source=source)
  native_batches = [next(native) for _ in range(12)]
  config = pipeline_config(batch_size=4, **{"input.train_mode": train_mode,
                                            "input.max_buckets": 3})
  sizes = buckets.read_sizes(source.records)
  chosen = buckets.choose_buckets(sizes, 3)
  hosts = [helpers.train_iterator(
      config, CAFFE, process_index=p, process_count=2, source=source)
           for p in range(2)]
  shapes = set()
  for step in range(3):
    parts = [next(host) for host in hosts]
    assert parts[0]["image"].shape == parts[1]["image"].shape
    shape = parts[0]["image"].shape[1:3]
    assert shape in chosen
    shapes.add(shape)
    true_sizes = np.concatenate([p["size"] for p in parts])
    assert shape == buckets.bucket_of_batch(true_sizes, chosen)
    for p, part in enumerate(parts):
      assert part["size"].dtype == np.int32
      for j in range(2):
        expected = native_batches[step * 4 + p * 2 + j]
        h, w = expected["label"].shape[1:]
        assert tuple(part["size"][j]) == (h, w)
        np.testing.assert_array_equal(part["image"][j, :h, :w],
                                      expected["image"][0])
        np.testing.assert_array_equal(part["label"][j, :h, :w],
                                      expected["label"][0])
        assert (part["label"][j, h:] == 255).all()
        assert (part["label"][j, :, w:] == 255).all()
        assert (part["image"][j, h:] == 0).all()
        assert (part["image"][j, :, w:] == 0).all()
  assert len(shapes) >= 1


def test_rescaling_keeps_native_training_unbatched():
  config = pipeline_config(batch_size=2, **{"input.train_mode": "epochs",
                                            "input.scale_range": (0.5, 1.0)})
  with pytest.raises(ValueError, match="buckets"):
    helpers.train_iterator(config, CAFFE, process_index=0,
                                         process_count=1,
                                         source=mixed_source(4))


# --------------------------------------------------------------------------
# The bucketed evaluation pipeline.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("process_count,eval_batch_size", [(1, 1), (1, 4),
                                                           (2, 4), (3, 3)])
def test_bucketed_eval_visits_each_example_once(process_count,
                                                eval_batch_size):
  source = mixed_source(11, seed=3)
  sizes = buckets.read_sizes(source.records)
  chosen = buckets.choose_buckets(sizes, 3)
  config = pipeline_config(eval_batch_size=eval_batch_size,
                           **{"input.max_buckets": 3})
  seen, per_host = [], []
  for process_index in range(process_count):
    data = helpers.eval_iterator(
        config, CAFFE, process_index=process_index,
        process_count=process_count, source=source, include_ids=True)
    batches = list(data)
    assert len(batches) == data.num_batches
    per_host.append([b["image"].shape[1:3] for b in batches])
    for batch in batches:
      shape = batch["image"].shape[1:3]
      assert shape in chosen
      for j in range(len(batch["valid"])):
        if not batch["valid"][j]:
          assert (batch["label"][j] == 255).all()
          continue
        k = int(str(batch["image_id"][j])[2:])
        seen.append(k)
        h, w = sizes[k]
        assert tuple(batch["size"][j]) == (h, w)
        # At its own smallest fitting bucket: no more padding than alone.
        assert shape == buckets.smallest_fitting(h, w, chosen)
        record = source.records[k]
        image = np.asarray(Image.open(io.BytesIO(record["image"])))
        np.testing.assert_array_equal(batch["image"][j, :h, :w], CAFFE(image))
        assert (batch["label"][j, h:] == 255).all()
        assert (batch["image"][j, :, w:] == 0).all()
  assert sorted(seen) == list(range(11))
  # Every host runs the same bucket at every step.
  assert all(shapes == per_host[0] for shapes in per_host)


def test_eval_plan_fills_global_batches_bucket_by_bucket():
  sizes = np.asarray([(10, 10), (30, 30), (10, 10), (10, 10), (30, 30)])
  chosen = ((10, 10), (30, 30))
  plans = [sampling.bucketed_eval_plan(sizes, chosen, 4, 2, p)
           for p in range(2)]
  np.testing.assert_array_equal(plans[0][0], [[0, 2], [1, 4]])
  np.testing.assert_array_equal(plans[1][0], [[3, -1], [-1, -1]])
  np.testing.assert_array_equal(plans[0][1], [[10, 10], [30, 30]])


def test_tta_evaluates_at_native_size():
  config = pipeline_config(eval_batch_size=1)
  config.tta.flip = True
  data = helpers.eval_iterator(
      config, CAFFE, process_index=0, process_count=1,
      source=mixed_source(3))
  for batch in data:
    assert "size" not in batch


def test_training_batches_of_several_images_always_fit_a_bucket():
  """A batch's bucket must hold its largest height and width together: with
  portrait and landscape images, the per-image optimum (two buckets, neither
  max height x max width) leaves a mixed batch without a bucket; training's
  choice keeps (max height, max width)."""
  sizes = np.array([(37, 53), (61, 45)] * 4)
  per_image = buckets.choose_buckets(sizes, 2)
  assert (61, 53) not in per_image  # The case that needs the rule.
  chosen = buckets.choose_buckets(sizes, 2, include_largest=True)
  assert (61, 53) in chosen and len(chosen) <= 2
  for a, b in itertools.combinations_with_replacement(
      [tuple(s) for s in np.unique(sizes, axis=0)], 2):
    batch = np.array([a, b])
    buckets.bucket_of_batch(batch, chosen)  # Raises if none fits.
  assert buckets.resolve("auto", 2, sizes, batches_mix_sizes=True) == chosen
  with pytest.raises(errors.UserError, match="61x53"):
    buckets.resolve("37x53,61x45", 4, sizes, batches_mix_sizes=True)
  # Larger, random splits: exhaustive and local-search paths alike.
  rng = np.random.default_rng(0)
  for n in (12, 400):
    sizes = rng.integers(20, 90, size=(n, 2))
    chosen = buckets.choose_buckets(sizes, 4, include_largest=True)
    assert (sizes[:, 0].max(), sizes[:, 1].max()) in chosen
