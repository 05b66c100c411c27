"""The ``folder`` builder on real image/mask files written in ``tmp_path``.

The fixture writes JPEG and PNG photos, palette PNG masks whose palette
colours are NOT their indices (so reading brightness instead of indices
would fail), greyscale masks, ``classes.txt`` and split files. Expected
masks are the arrays the fixture drew.
"""

import io
import pathlib
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from fcn_jax.data import data_sources
from fcn_jax import datasets
from fcn_jax import default_config
from fcn_jax import models
from fcn_jax import prepare_data
from fcn_jax import run_config
from fcn_jax.models import weights
from fcn_jax.datasets import common
from fcn_jax.datasets import folder

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ["background", "cat", "dog"]
# Index 1 is drawn darker than index 2 but brighter than 0 would map to
# other values if the palette were converted to brightness.
PALETTE = [0, 0, 0, 250, 250, 250, 10, 10, 10] + [0, 0, 0] * 253


def _draw(index, size=None):
  rng = np.random.default_rng(index)
  height, width = size or (int(v) for v in rng.integers(16, 40, size=2))
  image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  mask = rng.integers(0, len(CLASSES), size=(height, width)).astype(np.uint8)
  mask[0, :] = 255  # Void.
  return image, mask


def _save_palette(mask, path):
  image = Image.fromarray(mask, mode="P")
  image.putpalette(PALETTE)
  image.save(path)


def _make_folder(root, count=10, classes=True):
  """``count`` examples, even ones PNG, odd ones JPEG; returns the masks."""
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  masks = {}
  for index in range(count):
    image, mask = _draw(index)
    name = f"img_{index:02d}"
    Image.fromarray(image).save(
        root / "images" / (f"{name}.png" if index % 2 == 0 else
                           f"{name}.jpg"))
    _save_palette(mask, root / "masks" / f"{name}.png")
    masks[name] = mask
  if classes:
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
  return masks


def _records(builder, split):
  return builder.as_data_source(split=split,
                                decoders=common.skip_decoding_decoders())


def test_builds_indices_image_bytes_classes_and_splits(tmp_path):
  masks = _make_folder(tmp_path / "pets")
  result = folder.prepare("my_pets", str(tmp_path / "pets"),
                          str(tmp_path / "tfds"))
  builder = result.builder
  metadata = builder.info.metadata
  assert metadata["num_classes"] == 3 and metadata["class_names"] == CLASSES
  assert datasets.dataset_classes(metadata) == (3, CLASSES)
  assert metadata["split_method"] == "hash"
  assert metadata["val_fraction"] == 0.1 and metadata["split_seed"] == 0
  splits = {s: [r[common.IMAGE_ID].decode() for r in _records(builder, s)]
            for s in ("train", "val")}
  assert sorted(splits["train"] + splits["val"]) == sorted(masks)
  assert len(splits["val"]) >= 1 and len(splits["train"]) >= 1
  for split, ids in splits.items():
    for record in _records(builder, split):
      name = record[common.IMAGE_ID].decode()
      np.testing.assert_array_equal(common.decode_mask(
          record[common.MASK]), masks[name])
      stored = record[common.IMAGE]
      on_disk = next((tmp_path / "pets" / "images").glob(name + ".*"))
      assert stored == on_disk.read_bytes()  # Unchanged, PNG or JPEG.
      assert record[common.LABEL_SOURCE].decode() == "folder"
  # Opened by name like any dataset, from the files.
  source = data_sources.open_split("my_pets", "val", str(tmp_path / "tfds"))
  assert len(source.records) == len(splits["val"]) and not source.synthetic


def test_hash_split_is_stable_deterministic_and_near_the_fraction():
  names = [f"n{i}" for i in range(2000)]
  split = folder.hash_split(names, 0.1, seed=0)
  assert split == folder.hash_split(list(reversed(names)), 0.1, seed=0)
  assert abs(len(split["val"]) - 200) < 4 * np.sqrt(2000 * 0.1 * 0.9)
  # Adding names never moves an existing one.
  more = folder.hash_split(names + [f"m{i}" for i in range(500)], 0.1, 0)
  assert set(split["val"]) <= set(more["val"])
  assert set(split["train"]) <= set(more["train"])
  assert folder.hash_split(names, 0.1, seed=1) != split
  # Tiny datasets keep both splits non-empty.
  for n in (2, 3, 5):
    tiny = folder.hash_split([f"t{i}" for i in range(n)], 0.1, 0)
    assert len(tiny["val"]) == 1 and len(tiny["train"]) == n - 1
  # Small ones get the floor: min(5, a quarter), the lowest hashes, so 10 %
  # of 22 images is not one image.
  for n, want in ((8, 2), (12, 3), (22, 5), (40, 5)):
    ids = [f"s{i}" for i in range(n)]
    small = folder.hash_split(ids, 0.1, 0)
    lowest = sorted(ids, key=lambda i: (folder._split_hash(0, i), i))[:want]
    assert len(small["val"]) == want and sorted(small["val"]) == sorted(lowest)
    assert len(small["train"]) == n - want
  assert "val" not in folder.hash_split(names, 0.0, 0)


def test_every_problem_is_listed_and_skip_invalid_leaves_them_out(tmp_path):
  root = tmp_path / "bad"
  masks = _make_folder(root, count=8)
  (root / "masks" / "img_01.png").unlink()  # Image without mask.
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(
      root / "masks" / "orphan.png")  # Mask without image.
  image_path = root / "images" / "img_03.jpg"
  image_path.write_bytes(image_path.read_bytes()[:200])  # Truncated.
  Image.fromarray(np.zeros((7, 9), np.uint8)).save(
      root / "masks" / "img_04.png")  # Size mismatch.
  bad_values = masks["img_05"].copy()
  bad_values[3, 3] = 7
  _save_palette(bad_values, root / "masks" / "img_05.png")  # 7 >= 3 classes.
  Image.fromarray(np.zeros(masks["img_06"].shape + (3,), np.uint8)).save(
      root / "masks" / "img_06.png")  # Colour mask.
  (root / "images" / "notes.txt").write_text("not an image")

  with pytest.raises(folder.FolderDatasetError) as error:
    folder.scan_folder(root)
  text = str(error.value)
  assert "7 problem(s)" in text
  for expected in ("img_01.jpg has no mask", "orphan.png has no image",
                   "img_03.jpg cannot be read", "is 7x9",
                   "values [7] outside the classes 0..2",
                   "img_06.png has PIL mode 'RGB'", "notes.txt: not a"):
    assert expected in text, expected
  assert "--skip_invalid" in text

  result = folder.prepare("my_bad", str(root), str(tmp_path / "tfds"),
                          folder.FolderOptions(skip_invalid=True))
  skipped = result.builder.info.metadata["skipped"]
  assert sorted(skipped) == ["img_01", "img_03", "img_04", "img_05", "img_06",
                             "orphan"]
  built = sorted(r[common.IMAGE_ID].decode() for s in ("train", "val")
                 for r in _records(result.builder, s))
  assert built == ["img_00", "img_02", "img_07"]
  assert any("notes.txt" in w for w in result.scan.warnings)


def test_rebuild_is_a_no_op_or_a_new_version_never_a_mix(tmp_path):
  root, data_dir = tmp_path / "pets", str(tmp_path / "tfds")
  _make_folder(root, count=6)
  first = folder.prepare("my_pets", str(root), data_dir)
  assert str(first.builder.info.version) == "1.0.0"
  again = folder.prepare("my_pets", str(root), data_dir)
  assert "up to date" in again.message
  assert folder.built_versions("my_pets", data_dir) == ["1.0.0"]

  image, mask = _draw(100)
  Image.fromarray(image).save(root / "images" / "added.png")
  _save_palette(mask, root / "masks" / "added.png")
  second = folder.prepare("my_pets", str(root), data_dir)
  assert str(second.builder.info.version) == "1.1.0"
  assert "my_pets:1.0.0" in second.message and "6 examples then, 7 now" in (
      second.message)
  count = lambda b: sum(b.info.splits[s].num_examples for s in b.info.splits)
  assert count(datasets.builder("my_pets", data_dir)) == 7  # The newest.
  assert count(datasets.builder("my_pets:1.0.0", data_dir)) == 6
  # Other options are another dataset too.
  third = folder.prepare("my_pets", str(root), data_dir,
                         folder.FolderOptions(val_fraction=0.5))
  assert str(third.builder.info.version) == "1.2.0"


def test_split_files_greyscale_masks_and_class_count_options(tmp_path):
  root = tmp_path / "grey"
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  masks = {}
  for index in range(5):
    image, mask = _draw(index, size=(12, 14))
    mask = np.minimum(mask, 4)  # Values 0..2 and void from _draw.
    mask[5, 5] = 4
    Image.fromarray(image).save(root / "images" / f"g{index}.jpeg")
    Image.fromarray(mask, mode="L").save(root / "masks" / f"g{index}.png")
    masks[f"g{index}"] = mask
  (root / "splits").mkdir()
  (root / "splits" / "fit.txt").write_text("g0\ng1.jpeg\ng2\n")
  (root / "splits" / "check.txt").write_text("g3\n")

  scan = folder.scan_folder(root)  # 5 classes inferred from the masks.
  assert scan.class_names == tuple(f"class_{i}" for i in range(5))
  assert scan.class_source == "masks" and scan.split_method == "files"
  assert [e.image_id for e in scan.splits["fit"]] == ["g0", "g1", "g2"]
  assert [e.image_id for e in scan.splits["check"]] == ["g3"]
  assert any("g4" in w and "no splits" in w for w in scan.warnings)
  assert scan.max_size == (12, 14)
  with pytest.raises(folder.FolderDatasetError, match="values \\[4\\] outside"):
    folder.scan_folder(root, folder.FolderOptions(num_classes=4))
  (root / "classes.txt").write_text("a\nb\nc\nd\ne\nf\n")
  scan = folder.scan_folder(root)
  assert scan.num_classes == 6 and scan.class_source == "classes.txt"
  with pytest.raises(folder.FolderDatasetError, match="--num_classes 5 but"):
    folder.scan_folder(root, folder.FolderOptions(num_classes=5))
  (root / "splits" / "check.txt").write_text("g3\nmissing\n")
  with pytest.raises(folder.FolderDatasetError,
                     match="missing is listed in .*check.txt"):
    folder.scan_folder(root)

  result = folder.prepare("my_grey", str(root), str(tmp_path / "tfds"),
                          folder.FolderOptions(skip_invalid=True))
  assert set(result.builder.info.splits) == {"fit", "check"}
  for record in _records(result.builder, "fit"):
    np.testing.assert_array_equal(common.decode_mask(record[common.MASK]),
                                  masks[record[common.IMAGE_ID].decode()])


def test_read_mask_takes_indices_never_colours():
  mask = np.array([[0, 1, 2], [255, 2, 1]], np.uint8)
  buffer = io.BytesIO()
  image = Image.fromarray(mask, mode="P")
  image.putpalette(PALETTE)
  image.save(buffer, "PNG")
  np.testing.assert_array_equal(folder.read_mask(buffer.getvalue(), "m"),
                                mask)
  assert not np.array_equal(  # What a brightness conversion would give.
      np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L")), mask)
  for array in (np.full((2, 2), 300, np.uint16),  # 16-bit greyscale.
                np.zeros((2, 2, 3), np.uint8)):  # Colour.
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    with pytest.raises(common.InvalidExampleError, match="m (is|has)"):
      folder.read_mask(buffer.getvalue(), "m")


def test_names_and_unbuilt_datasets_get_clear_errors(tmp_path):
  for name, match in (("My Pets", "lower-case"), ("voc_seg", "TFDS dataset"),
                      ("mnist", "TFDS dataset"), ("folder", "TFDS dataset")):
    with pytest.raises(folder.FolderDatasetError, match=match):
      folder.check_name(name)
  with pytest.raises(FileNotFoundError,
                     match="--dataset folder --manual_dir .* --name nope"):
    data_sources.open_split("nope", "train", str(tmp_path))
  with pytest.raises(ValueError, match="config.dataset.name is empty"):
    datasets.builder("", str(tmp_path))
  (tmp_path / "images").mkdir()
  with pytest.raises(folder.FolderDatasetError, match="masks/ is missing"):
    folder.scan_folder(tmp_path)


def _prepare_cli(args):
  return subprocess.run(
      [sys.executable, "-m", "fcn_jax.prepare_data", *args], cwd=REPO,
      capture_output=True, text=True, timeout=300)


def test_prepare_data_cli(tmp_path):
  _make_folder(tmp_path / "pets", count=6)
  args = ["--dataset", "folder", "--manual_dir", str(tmp_path / "pets"),
          "--data_dir", str(tmp_path / "tfds")]
  result = _prepare_cli(args + ["--name", "cli_pets"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "3 classes (classes.txt): background, cat, dog" in result.stdout
  assert "--config.dataset.name=cli_pets" in result.stdout
  assert "eval_pad_size, which must be >=" in result.stdout
  missing_name = _prepare_cli(args)
  assert missing_name.returncode == 2
  assert "error: --dataset folder needs --name" in missing_name.stderr
  assert "Traceback" not in missing_name.stderr
  assert prepare_data.main(["--dataset", "synthetic_shapes", "--name",
                            "x"]) == 2


def test_training_takes_the_class_count_from_the_dataset(tmp_path):
  _make_folder(tmp_path / "pets", count=4)
  folder.prepare("my_pets", str(tmp_path / "pets"), str(tmp_path / "tfds"))
  config = default_config.get_config()
  config.dataset.name = "my_pets"
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.dataset.train_split, config.dataset.eval_split = "train", "val"
  config.model.num_classes = 0
  run = run_config.resolve(config, "train")
  assert run.spec.num_classes == run.config.model.num_classes == 3
  assert run.class_names == ["background", "cat", "dog"]
  config.model.num_classes = 21
  with pytest.raises(ValueError, match="has 3 classes.*"
                     "--config.model.num_classes=3"):
    run_config.resolve(config, "train")
  config.dataset.name = "synthetic_shapes/tiny"  # Not built: code metadata.
  config.model.num_classes = 0
  assert run_config.resolve(config, "train").spec.num_classes == 21


def test_builtin_builders_record_class_names(tmp_path):
  for builder in (datasets.VocSeg(data_dir=str(tmp_path)),
                  datasets.SyntheticShapes(config="tiny",
                                           data_dir=str(tmp_path))):
    assert datasets.dataset_classes(builder.info.metadata) == (
        21, list(datasets.voc.VOC_CLASSES))


def test_fine_tuning_another_class_count_reinitialises_the_score_layers():
  rng = np.random.default_rng(0)

  def random_params(num_classes):  # Shapes only: no forward pass compiled.
    shapes = models.param_shapes(models.create_model(
        "fcn8s", num_classes, width_divisor=64))
    return jax.tree.map(
        lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)

  source, target = random_params(21), random_params(3)
  with pytest.raises(weights.WeightsError, match="score_fr"):
    weights.copy_by_name(source, target)
  params, report = weights.copy_by_name(source, target,
                                        reinit_class_layers=True)
  for layer in ("conv1_1", "fc7"):
    np.testing.assert_array_equal(params[layer]["kernel"],
                                  source[layer]["kernel"])
  for layer in ("score_fr", "score_pool4", "score_pool3", "upscore2",
                "upscore8"):
    jax.tree.map(np.testing.assert_array_equal, params[layer], target[layer])
    assert "other class count" in report.missing[layer]
