"""The paper's other datasets through the pipeline, training, evaluation and
prediction: NYUDv2 colour + HHA / depth, SIFT Flow's two heads and
PASCAL-Context.

The pipeline tests paint every plane of an example (colour, HHA, depth and
both label maps) with its own function of the pixel position, so after a
crop and a mirror each plane says which source pixel it holds; they must all
agree. The end-to-end tests build the tiny fixtures of
``paper_datasets_test`` in the real formats, prepare them, train a tiny net
for two steps with each dataset's own config file and evaluate it (in
process, with ``loop.run``, what ``python -m fcn_jax.main`` runs once it has
parsed its flags; ``main_test`` covers the command line), then run
``fcn_jax.predict``'s ``main`` on the fixture's images.
"""

import io
import json
import pathlib

import ml_collections
import numpy as np
from PIL import Image
import pytest

from fcn_jax import default_config
from fcn_jax import models
from fcn_jax.data import augmentations
from fcn_jax.data import batch_transforms
from fcn_jax.data import data_sources
from fcn_jax.data import input_config
from fcn_jax.evaluation import metrics
from fcn_jax import predict
from fcn_jax.data import preprocessing
from fcn_jax.evaluation import evaluator
from fcn_jax.datasets import common
from fcn_jax.datasets import nyud
from fcn_jax.datasets import pascal_context
from fcn_jax.datasets import sift_flow
import paper_datasets_test as fixtures
from tests import helpers
from tests import tiny_fcn

REPO = pathlib.Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 22, 26


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def _position_record(image_id="a"):
  """Colour, HHA, depth and two label maps, each a function of (y, x)."""
  y, x = np.mgrid[:HEIGHT, :WIDTH]
  color = np.stack([x * 9, y * 11, np.full_like(x, 5)], -1).astype(np.uint8)
  hha = np.stack([250 - x * 9, y * 11, np.full_like(x, 7)],
                 -1).astype(np.uint8)
  depth = (1000 + x + 100 * y).astype(np.uint16)
  return {"image": _png(color), "hha": _png(hha),
          "depth": common.encode_depth_png(depth),
          "semantic_mask": _png(x.astype(np.uint8)),
          "geometric_mask": _png(y.astype(np.uint8)),
          "image_id": image_id.encode(), "height": HEIGHT, "width": WIDTH}


# Every kind of input and two heads in one layout.
ALL_PLANES = input_config.ExampleLayout(
    inputs=(("color", ("image",), 3), ("hha", ("hha",), 3),
            ("rgbd", ("image", "depth"), 4)),
    labels=(("sem", "semantic_mask"), ("geo", "geometric_mask")),
    multi_input=True, multi_head=True)


def _source_positions(image, label):
  """``(y, x)`` each plane says it holds, from the encodings above."""
  color_bgr = image["color"] + np.float32(preprocessing.NYUD.mean)
  hha = image["hha"] + np.float32(preprocessing.NYUD_HHA.mean)
  rgbd = image["rgbd"]
  depth = np.exp(rgbd[..., 3].astype(np.float64) + 7.844)
  return {
      "color": (color_bgr[..., 1] / 11, color_bgr[..., 2] / 9),
      "hha": (hha[..., 1] / 11, (250 - hha[..., 0]) / 9),
      "rgbd color": ((rgbd[..., 1] + 97.203) / 11, (rgbd[..., 2] + 92.318) / 9),
      "depth": ((depth - 1000) // 100, (depth - 1000) % 100),
      "sem/geo": (label["geo"].astype(float), label["sem"].astype(float)),
  }


def test_a_cropped_mirrored_example_has_one_geometry_on_every_plane():
  mirrored = set()
  for seed in range(3):
    transform = batch_transforms.TrainBatchTransform(
        augmentations.TrainAugmentation(16, True, (1.0, 1.0)),
        preprocessing.NYUD, seed=seed, global_batch_size=2,
        layout=ALL_PLANES)
    batch = transform.map_with_index(0, [_position_record(),
                                         _position_record()])
    assert set(batch["image"]) == {"color", "hha", "rgbd"}
    assert set(batch["label"]) == {"sem", "geo"}
    assert batch["image"]["rgbd"].shape == (2, 16, 16, 4)
    for j in range(2):
      image = {k: v[j] for k, v in batch["image"].items()}
      label = {k: v[j] for k, v in batch["label"].items()}
      positions = _source_positions(image, label)
      ys, xs = positions.pop("sem/geo")
      # The labels are one crop window, mirrored or not.
      assert (np.diff(ys, axis=0) == 1).all()
      step = np.diff(xs, axis=1)
      assert (step == step[0, 0]).all() and abs(step[0, 0]) == 1
      mirrored.add(bool(step[0, 0] < 0))
      for name, (y, x) in positions.items():
        np.testing.assert_allclose(y, ys, atol=2e-2, err_msg=name)
        np.testing.assert_allclose(x, xs, atol=2e-2, err_msg=name)
  assert mirrored == {True, False}  # Both paths were taken.


def test_a_rescaled_example_keeps_its_planes_aligned():
  transform = batch_transforms.TrainBatchTransform(
      augmentations.TrainAugmentation(0, True, (1.5, 1.5)),
      preprocessing.NYUD, seed=3, global_batch_size=1, layout=ALL_PLANES)
  batch = transform.map_with_index(0, [_position_record()])
  image = {k: v[0] for k, v in batch["image"].items()}
  label = {k: v[0] for k, v in batch["label"].items()}
  assert label["sem"].shape == (33, 39)  # round(22 * 1.5), round(26 * 1.5).
  positions = _source_positions(image, label)
  ys, xs = positions.pop("sem/geo")
  for name in ("color", "hha"):
    y, x = positions[name]
    # Bilinear planes against nearest-neighbour labels: within a pixel.
    assert np.abs(y - ys).max() <= 1.0 and np.abs(x - xs).max() <= 1.0, name
  # Bilinear planes among themselves: the same coordinate map (the planes
  # are linear in y and x, which bilinear resampling keeps).
  y, x = positions["color"]
  # (up to the uint8 rounding of each colour: 1/9 of a pixel).
  np.testing.assert_allclose(positions["hha"][1], x, atol=1 / 9 + 1e-3)
  depth = np.exp(image["rgbd"][..., 3].astype(np.float64) + 7.844)
  # (colour's y is rounded to 1/22 of a pixel, i.e. 4.6 depth units; a map
  # one row off would be 100 off).
  np.testing.assert_allclose(depth, 1000 + x + 100 * y, atol=5.0)


def test_padding_fills_every_input_and_head():
  transform = batch_transforms.EvalBatchTransform(
      [_position_record()], 0, 1, 2, 32, preprocessing.NYUD,
      layout=ALL_PLANES)
  batch = transform.map(0)
  assert batch["valid"].tolist() == [True, False]
  for head, label in batch["label"].items():
    assert (label[0, HEIGHT:] == 255).all() and (label[1] == 255).all(), head
  for name, image in batch["image"].items():
    assert (image[0, :, WIDTH:] == 0).all() and (image[1] == 0).all(), name
  # Exact values: depth is log(d) - 7.844 of the raw value.
  depth = 1000 + np.arange(WIDTH)[None] + 100 * np.arange(HEIGHT)[:, None]
  np.testing.assert_allclose(batch["image"]["rgbd"][0, :HEIGHT, :WIDTH, 3],
                             np.log(depth) - 7.844, atol=1e-5)


def _config(model_name, **dataset):
  config = default_config.get_config()
  config.model.name = model_name
  config.model.num_classes = models.NETS[model_name].num_classes
  config.dataset.update(dict(
      name="x", train_split="train", eval_split="test",
      label_features=ml_collections.ConfigDict(dataset)))
  config.batch_size = 4
  config.eval_batch_size = 2
  config.input.update(dict(
      train_mode="epochs", crop_size=16, random_mirror=True,
      scale_range=(0.8, 1.2), eval_pad_size=32))
  return config


def _split(count):
  return data_sources.SplitSource(
      [_position_record(f"id{k}") for k in range(count)], "test:split", False)


def test_host_shards_and_the_saved_position_with_two_heads():
  config = _config("siftflow_fcn32s", sem="semantic_mask",
                   geo="geometric_mask")
  source = _split(3)
  whole = helpers.train_iterator(
      config, preprocessing.SIFT_FLOW, process_index=0, process_count=1,
      source=source)
  batches = [next(whole) for _ in range(3)]
  halves = [helpers.train_iterator(
      config, preprocessing.SIFT_FLOW, process_index=p, process_count=2,
      source=source) for p in range(2)]
  for batch in batches:
    parts = [next(h) for h in halves]
    assert batch["image"].shape == (4, 16, 16, 3)
    for head in ("sem", "geo"):
      np.testing.assert_array_equal(
          batch["label"][head],
          np.concatenate([p["label"][head] for p in parts]))
  state = whole.get_state()
  following = next(whole)
  resumed = helpers.train_iterator(
      config, preprocessing.SIFT_FLOW, process_index=0, process_count=1,
      source=source)
  resumed.set_state(state)
  again = next(resumed)
  for head in ("sem", "geo"):
    np.testing.assert_array_equal(again["label"][head],
                                  following["label"][head])


def test_reference_mode_feeds_color_hha_at_native_size():
  config = _config("nyud_fcn32s_color_hha")
  config.batch_size = 1
  config.input.update(train_mode="reference", crop_size=0,
                      random_mirror=False, scale_range=(1.0, 1.0))
  records = [{**_position_record(), "segmentation_mask": _png(
      np.full((HEIGHT, WIDTH), 3, np.uint8))}]
  batch = next(helpers.train_iterator(
      config, preprocessing.NYUD, process_index=0, process_count=1,
      source=data_sources.SplitSource(records, "nyud:x", False)))
  assert set(batch["image"]) == {"color", "hha"}
  assert batch["image"]["hha"].shape == (1, HEIGHT, WIDTH, 3)
  assert (batch["label"] == 3).all()


def test_a_split_without_the_features_is_one_clear_error():
  config = _config("nyud_fcn32s_color_d")
  records = [{k: v for k, v in _position_record().items() if k != "depth"}]
  records[0]["segmentation_mask"] = records[0]["semantic_mask"]
  with pytest.raises(ValueError, match=r"nyud_fcn32s_color_d reads the "
                     r"feature\(s\) \['depth'\], which voc:x does not have"):
    helpers.eval_iterator(
        config, preprocessing.NYUD, process_index=0, process_count=1,
        source=data_sources.SplitSource(records, "voc:x", False))


def test_label_features_must_name_the_heads():
  with pytest.raises(ValueError, match=r"no dataset feature for the "
                     r"head\(s\) \['geo'\]"):
    input_config.ExampleLayout.from_config(
        _config("siftflow_fcn8s", sem="semantic_mask"))
  with pytest.raises(ValueError, match=r"names \['sem'\], which are not "
                     "heads of fcn32s"):
    input_config.ExampleLayout.from_config(
        _config("fcn32s", sem="semantic_mask"))


def test_weights_with_another_depth_preparation_are_refused():
  recorded = preprocessing.source_preprocessing_metadata(["image", "depth"])
  assert recorded == {"depth": {"mean": 7.844, "name": "nyud_log_depth"}}
  preprocessing.check_source_preprocessing(recorded, "w")
  with pytest.raises(ValueError, match="w was trained with depth prepared"):
    preprocessing.check_source_preprocessing({"depth": {"mean": 7.0}}, "w")


# --------------------------------------------------------------------------
# Excluded classes.
# --------------------------------------------------------------------------


def _naive_means(hist, keep):
  """score.py's formulas over the kept classes only, loop by loop."""
  accs, ius, fw, kept_pixels = [], [], 0.0, sum(hist[i].sum() for i in keep)
  for i in keep:
    true, predicted, hit = hist[i].sum(), hist[:, i].sum(), hist[i, i]
    if true:
      accs.append(hit / true)
    if true + predicted - hit:
      ius.append(hit / (true + predicted - hit))
      if true:
        fw += true / kept_pixels * hit / (true + predicted - hit)
  return np.mean(accs), np.mean(ius), fw


def test_excluded_classes_leave_the_means_against_a_naive_loop():
  rng = np.random.default_rng(0)
  hist = rng.integers(0, 50, (6, 6))
  hist[2] = 0  # Absent from the ground truth, but predicted.
  hist[5] = 0
  result = metrics.segmentation_metrics(hist, exclude=[2, 5])
  mean_acc, mean_iu, fw_iu = _naive_means(hist, [0, 1, 3, 4])
  assert result["mean_acc"] == pytest.approx(mean_acc)
  assert result["mean_iu"] == pytest.approx(mean_iu)
  assert result["fw_iu"] == pytest.approx(fw_iu)
  assert result["pixel_acc"] == pytest.approx(np.trace(hist) / hist.sum())
  # Without the exclusion the predicted-but-absent classes count as IU 0.
  assert metrics.segmentation_metrics(hist)["mean_iu"] < mean_iu


def test_excluded_class_names_are_resolved_per_head():
  names = {"sem": ["sky", "cow", "moon"], "geo": ["sky", "horizontal"]}
  assert metrics.excluded_classes(("cow", "geo:sky"), names) == {
      "sem": [1], "geo": [0]}
  with pytest.raises(ValueError, match="'sky' is a class of the heads"):
    metrics.excluded_classes(("sky",), names)
  with pytest.raises(ValueError, match="no class 'cat' in any head"):
    metrics.excluded_classes(("cat",), names)


# --------------------------------------------------------------------------
# End to end: prepare, train + eval with the dataset's config, predict.
# --------------------------------------------------------------------------


# The tiny run every end-to-end test makes of a dataset's own config file.
TINY = {
    "model.width_divisor": 64, "init_from": "", "num_train_steps": 2,
    # The fixed bilinear upsamplers as (k, k, 1, C) kernels: the same
    # numbers, without (64, 64, 60, 60) dense kernels on CPU.
    "model.upsample_mode": "depthwise",
    "eval_every_steps": 2, "log_every_steps": 1, "checkpoint.every_steps": 2,
    "num_eval_tiles": 1,
    # One training shape (one compilation): 32x32 crops of the tiny images.
    "input.train_mode": "epochs", "input.crop_size": 32,
}


def _config_file(name, data_dir, **overrides):
  """``configs/<name>.py`` with :data:`TINY` and ``overrides`` applied."""
  return helpers.with_overrides(helpers.load_config(name), {
      "dataset.data_dir": str(data_dir), **TINY, **overrides})


def _load_config(name, data_dir, workdir, **overrides):
  """Trains and evaluates with ``python -m fcn_jax.main`` (a subprocess) on
  ``configs/<name>.py`` with :data:`TINY` and ``overrides`` as ``--config.*``
  flags; returns the config those flags give."""
  flags = {"dataset.data_dir": str(data_dir), **TINY, **overrides}
  result = tiny_fcn.run_module(
      ["fcn_jax.main", "--config", str(REPO / "configs" / f"{name}.py"),
       "--workdir", str(workdir),
       *(f"--config.{key}={value}" for key, value in flags.items())],
      workdir.parent, REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return _config_file(name, data_dir, **overrides)


def _eval_record(workdir):
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [2]
  return evals[0]


def _predict(args):
  assert predict.main([*args, "--no-progress", "--batch-size", "1"]) == 0


def test_nyud_color_hha_end_to_end(tmp_path):
  fixtures.make_nyud_tree(tmp_path / "manual")
  lists = tmp_path / "lists"
  for split, ids in fixtures.NYUD_SPLITS.items():
    fixtures._write_list(lists / f"nyud_{split}.txt", ids)
  fixtures._build(nyud.Nyud, tmp_path / "manual", tmp_path / "tfds",
                  id_list_dir=str(lists))
  workdir = tmp_path / "run"
  _load_config("nyud_fcn32s_color_hha", tmp_path / "tfds", workdir)
  result = _eval_record(workdir)
  assert result["num_images"] == 1  # test: 6449.
  hist = np.asarray(result["confusion_matrix"])
  assert hist.shape == (40, 40)
  label = common.decode_mask(fixtures._png(fixtures._reference_shift(
      fixtures._nyud_draw("6449")[3])))
  assert hist.sum() == (label != 255).sum()  # Every labelled test pixel.
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["preprocessing"]["name"] == "nyud"
  assert saved["source_preprocessing"]["hha"]["mean"] == pytest.approx(
      [132.431, 94.076, 118.477])

  data = tmp_path / "manual" / "data"
  out = tmp_path / "predictions"
  _predict(["--checkpoint", str(workdir), "--input",
            str(data / "images" / "img_6449.png"), "--hha",
            str(data / "hha"), "--output", str(out)])
  predicted = np.asarray(Image.open(out / "img_6449.png"))
  assert predicted.shape == label.shape and predicted.max() < 40


def test_sift_flow_two_heads_end_to_end(tmp_path):
  fixtures.make_sift_tree(tmp_path / "manual")
  lists = tmp_path / "lists"
  for split, ids in fixtures.SIFT_SPLITS.items():
    fixtures._write_list(lists / f"siftflow_{split}.txt", ids)
  fixtures._build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "tfds",
                  id_list_dir=str(lists))
  workdir = tmp_path / "run"
  config = _load_config("siftflow_fcn16s", tmp_path / "tfds", workdir)
  result = _eval_record(workdir)
  semantic, geometric = sift_flow.read_class_names()
  heads = result["heads"]
  assert set(heads) == {"sem", "geo"}
  assert heads["sem"]["excluded_classes"] == ["cow", "desert", "moon"]
  assert "excluded_classes" not in heads["geo"]
  # The reported means leave cow, desert and moon out: a naive computation
  # from the confusion matrix over the other 30 classes.
  hist = np.asarray(heads["sem"]["confusion_matrix"], np.float64)
  keep = [i for i, n in enumerate(semantic) if n not in ("cow", "desert",
                                                         "moon")]
  assert len(keep) == 30
  mean_acc, mean_iu, fw_iu = _naive_means(hist, keep)
  assert result["mean_iu"] == pytest.approx(mean_iu)
  assert result["mean_acc"] == pytest.approx(mean_acc)
  assert result["fw_iu"] == pytest.approx(fw_iu)
  assert result["mean_iu"] == heads["sem"]["mean_iu"]
  # Geometric pixel accuracy, from its own 3x3 matrix.
  geo = np.asarray(heads["geo"]["confusion_matrix"])
  assert geo.shape == (3, 3)
  assert heads["geo"]["pixel_acc"] == pytest.approx(np.trace(geo) / geo.sum())
  expected = fixtures._reference_geometric(
      fixtures._sift_draw("street_par151")[2])
  assert geo.sum() == (expected != 255).sum()
  assert sorted(heads["geo"]["per_class_iu"]) == sorted(geometric)

  # Evaluation of the saved model (the one path, evaluate_checkpoint).
  report = evaluator.evaluate_checkpoint(
      *evaluator.load_checkpoint(config, str(workdir)),
      output_dir=str(tmp_path / "ev"))
  assert report["metrics"]["heads"]["sem"]["mean_iu"] == pytest.approx(
      result["mean_iu"])
  assert (tmp_path / "ev" / "confusion_geo.png").exists()

  out = tmp_path / "predictions"
  image = (tmp_path / "manual" / "Images" / sift_flow.CATEGORY_DIR /
           "street_par151.jpg")
  _predict(["--checkpoint", str(workdir), "--input", str(image),
            "--output", str(out)])
  assert np.asarray(Image.open(out / "street_par151_sem.png")).max() < 33
  assert np.asarray(Image.open(out / "street_par151_geo.png")).max() < 3


def test_pascal_context_end_to_end(tmp_path):
  truth = fixtures.make_context_tree(tmp_path / "manual")
  fixtures._build(pascal_context.PascalContext, tmp_path / "manual",
                  tmp_path / "tfds")
  workdir = tmp_path / "run"
  _load_config("pascalcontext_fcn32s", tmp_path / "tfds", workdir,
               **{"input.eval_pad_size": 32, "eval_batch_size": 1})
  result = _eval_record(workdir)
  hist = np.asarray(result["confusion_matrix"], np.float64)
  assert hist.shape == (60, 60)
  mask = truth["2008_000008"][1]
  assert hist.sum() == mask.size  # No void: every pixel counts.
  # The reference's convention: the means over all 60 outputs, background
  # included (docs/reference.md §8.4).
  _, mean_iu, _ = _naive_means(hist, range(60))
  assert result["mean_iu"] == pytest.approx(mean_iu)
  assert "background" in result["per_class_iu"]

  out = tmp_path / "predictions"
  image = (tmp_path / "manual" / "VOCdevkit" / "VOC2010" / "JPEGImages" /
           "2008_000008.jpg")
  _predict(["--checkpoint", str(workdir), "--input", str(image),
            "--output", str(out)])
  assert np.asarray(Image.open(out / "2008_000008.png")).shape == mask.shape
