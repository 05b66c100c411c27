"""Tests of the TFDS builders on a mini VOCdevkit + SBD in the real formats.

The fixture writes JPEGs, VOC palette PNGs with a 255 border, SBD ``.mat``
files holding the ``GTcls`` struct (scipy), and the two archives (an
uncompressed tar and a tgz) with the official names and folder layout. The
expected masks are the arrays the fixture drew, not anything the builder
computed.
"""

import io
import json
import pathlib
import re
import tarfile
import tempfile

import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow_datasets as tfds

from fcn_jax import prepare_data
from fcn_jax import voc
from fcn_jax.datasets import common
from fcn_jax.datasets import synthetic_shapes
from fcn_jax.datasets import voc_seg

VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]
VOC_VAL = ["2007_000033", "2008_000003"]
SEG11VALID = ["2007_000033"]
SBD_TRAIN = ["2007_000032", "2008_000100", "2008_000101"]
SBD_VAL = ["2007_000033", "2008_000200"]
# (SBD train + SBD val + VOC train) - VOC val, sorted.
TRAIN_AUG = ["2007_000032", "2007_000039", "2008_000002", "2008_000100",
             "2008_000101", "2008_000200"]


def _id_number(image_id):
  return int(image_id.replace("_", ""))


def _draw(image_id, source):
  """A distinct image and mask per (id, source); VOC masks get a 255 border."""
  rng = np.random.default_rng((_id_number(image_id), source == "sbd"))
  height, width = (int(v) for v in rng.integers(20, 40, size=2))
  mask = np.zeros((height, width), np.uint8)
  for _ in range(3):
    label = int(rng.integers(1, 21))
    y, x = (int(v) for v in rng.integers(0, [height - 5, width - 5]))
    mask[y:y + 8, x:x + 10] = label
  if source == "voc2012":
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 255
  image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  return image, mask


def _jpeg_bytes(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=95)
  return buffer.getvalue()


def _palette_png_bytes(mask):
  image = Image.fromarray(mask, mode="P")
  image.putpalette(voc.voc_colormap().reshape(-1).tolist())
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return buffer.getvalue()


def _mat_bytes(mask):
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, {"GTcls": {
      "Segmentation": mask,
      "Boundaries": np.zeros((1, 20), object),
      "CategoriesPresent": np.unique(mask[mask > 0]).astype(np.uint8)}})
  return buffer.getvalue()


def _write(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def make_mini_tree(root, *, voc_ids=None, sbd_ids=None, overrides=None):
  """Writes extracted VOCdevkit/VOC2012 and benchmark_RELEASE/dataset trees.

  Returns:
    {(id, source): (jpeg_bytes, mask)} for the files written.
  """
  overrides = overrides or {}
  truth = {}
  voc_root = root / voc_seg.VOC_ROOT
  sbd_root = root / voc_seg.SBD_ROOT
  voc_ids = voc_ids or VOC_TRAIN + VOC_VAL
  sbd_ids = sbd_ids or SBD_TRAIN + SBD_VAL
  for image_id in voc_ids:
    image, mask = _draw(image_id, "voc2012")
    jpeg, png = overrides.get((image_id, "voc2012"),
                              (_jpeg_bytes(image), _palette_png_bytes(mask)))
    _write(voc_root / "JPEGImages" / f"{image_id}.jpg", jpeg)
    _write(voc_root / "SegmentationClass" / f"{image_id}.png", png)
    truth[image_id, "voc2012"] = (jpeg, mask)
  for image_id in sbd_ids:
    image, mask = _draw(image_id, "sbd")
    jpeg, mat = overrides.get((image_id, "sbd"),
                              (_jpeg_bytes(image), _mat_bytes(mask)))
    _write(sbd_root / "img" / f"{image_id}.jpg", jpeg)
    _write(sbd_root / "cls" / f"{image_id}.mat", mat)
    truth[image_id, "sbd"] = (jpeg, mask)
  lists = voc_root / "ImageSets" / "Segmentation"
  lists.mkdir(parents=True)
  (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
  (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
  (sbd_root / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
  (sbd_root / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
  return truth


def make_archives(tree_root, manual_dir):
  """Packs a mini tree into the two official archive names."""
  manual_dir.mkdir(parents=True, exist_ok=True)
  with tarfile.open(manual_dir / voc_seg.VOC_ARCHIVE, "w") as tar:
    tar.add(tree_root / "VOCdevkit", arcname="VOCdevkit")
  with tarfile.open(manual_dir / voc_seg.SBD_ARCHIVE, "w:gz") as tar:
    tar.add(tree_root / "benchmark_RELEASE", arcname="benchmark_RELEASE")


@pytest.fixture
def seg11valid_file(tmp_path):
  path = tmp_path / "seg11valid_mini.txt"
  path.write_text("\n".join(SEG11VALID) + "\n")
  return str(path)


def _build(manual_dir, data_dir, seg11valid_file, **kwargs):
  kwargs.setdefault("check_split_sizes", False)
  builder = voc_seg.VocSeg(data_dir=str(data_dir),
                           seg11valid_file=seg11valid_file, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def _read_split(data_dir, split):
  source = tfds.data_source("voc_seg", split=split, data_dir=str(data_dir),
                            decoders=common.skip_decoding_decoders(),
                            download=False)
  return [source[i] for i in range(len(source))]


EXPECTED_SPLITS = {
    "voc2012_train": [(i, "voc2012") for i in VOC_TRAIN],
    "voc2012_val": [(i, "voc2012") for i in VOC_VAL],
    "sbd_train": [(i, "sbd") for i in SBD_TRAIN],
    "sbd_val": [(i, "sbd") for i in SBD_VAL],
    "seg11valid": [(i, "voc2012") for i in SEG11VALID],
    "train_aug": [(i, "voc2012" if i in VOC_TRAIN else "sbd")
                  for i in TRAIN_AUG],
}


def _check_built(data_dir, truth):
  for split, expected in EXPECTED_SPLITS.items():
    records = _read_split(data_dir, split)
    assert [(r["image_id"].decode(), r["label_source"].decode())
            for r in records] == expected, split
    for record, key in zip(records, expected):
      jpeg, mask = truth[key]
      assert record["image"] == jpeg  # Stored byte for byte.
      stored = common.decode_mask(record["segmentation_mask"])
      np.testing.assert_array_equal(stored, mask)
      assert (record["height"], record["width"]) == mask.shape


def test_build_from_archives(tmp_path, seg11valid_file):
  truth = make_mini_tree(tmp_path / "tree")
  make_archives(tmp_path / "tree", tmp_path / "manual")
  _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)
  _check_built(tmp_path / "data", truth)
  info = json.loads((tmp_path / "data" / "voc_seg" / "1.0.0" /
                     "dataset_info.json").read_text())
  assert "arrayRecord" in json.dumps(info) or "array_record" in json.dumps(info)
  # The VOC masks keep their void border; SBD's have none.
  border = _read_split(tmp_path / "data", "voc2012_train")[0]
  assert (common.decode_mask(border["segmentation_mask"])[0] == 255).all()
  # The class names, in the order of docs/reference.md §8.1, as training reads
  # them: from the prepared files.
  metadata = tfds.builder_from_directory(
      str(tmp_path / "data" / "voc_seg" / "1.0.0")).info.metadata
  names = metadata["class_names"]
  assert metadata["num_classes"] == len(names) == 21
  assert (names[0], names[11], names[20]) == ("background", "diningtable",
                                              "tvmonitor")


def test_build_from_extracted_folders(tmp_path, seg11valid_file):
  truth = make_mini_tree(tmp_path / "manual")
  _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)
  _check_built(tmp_path / "data", truth)


def test_split_size_check_names_expected_and_found_counts(
    tmp_path, seg11valid_file):
  make_mini_tree(tmp_path / "manual")
  with pytest.raises(voc_seg.SplitSizeError) as error:
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file,
           check_split_sizes=True)
  message = str(error.value)
  assert "voc2012_train: expected 1,464 ids, found 3" in message
  assert "sbd_train: expected 8,498 ids, found 3" in message
  assert "train_aug: expected 10,582 ids, found 6" in message
  assert "--no_check_split_sizes" in message


def test_split_size_check_accepts_the_recorded_sizes():
  entries = {name: [None] * size
             for name, size in voc_seg.SPLIT_SIZES.items()}
  voc_seg.check_split_sizes(entries, {name: "x" for name in entries})
  entries["seg11valid"] = entries["seg11valid"][:-1]
  with pytest.raises(voc_seg.SplitSizeError, match="seg11valid: expected 736"):
    voc_seg.check_split_sizes(entries, {name: "x" for name in entries})


def test_recorded_sizes_are_the_published_ones():
  # docs/reference.md §8.1 and the VOC2012/SBD releases.
  assert voc_seg.SPLIT_SIZES == {
      "voc2012_train": 1464, "voc2012_val": 1449, "sbd_train": 8498,
      "sbd_val": 2857, "seg11valid": 736, "train_aug": 10582}


def test_shipped_seg11valid_list():
  ids = voc_seg.parse_id_list(voc_seg.SEG11VALID_FILE.read_text(), "list")
  assert len(ids) == 736
  assert all(re.fullmatch(r"20(07|08|09|10|11)_\d{6}", i) for i in ids)


def test_missing_archives_error_names_files_sources_and_layout(
    tmp_path, seg11valid_file):
  (tmp_path / "manual").mkdir()
  with pytest.raises(voc_seg.MissingDataError) as error:
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)
  message = str(error.value)
  for text in (voc_seg.VOC_ARCHIVE, voc_seg.VOC_URL, "VOCdevkit/VOC2012",
               voc_seg.SBD_ARCHIVE, "benchmark_RELEASE/dataset"):
    assert text in message


def test_missing_sbd_only(tmp_path, seg11valid_file):
  make_mini_tree(tmp_path / "tree")
  make_archives(tmp_path / "tree", tmp_path / "manual")
  (tmp_path / "manual" / voc_seg.SBD_ARCHIVE).unlink()
  with pytest.raises(voc_seg.MissingDataError, match="benchmark.tgz") as error:
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)
  assert voc_seg.SBD_URL in str(error.value)


def test_truncated_sbd_archive(tmp_path, seg11valid_file):
  make_mini_tree(tmp_path / "tree")
  make_archives(tmp_path / "tree", tmp_path / "manual")
  archive = tmp_path / "manual" / voc_seg.SBD_ARCHIVE
  archive.write_bytes(archive.read_bytes()[:len(archive.read_bytes()) // 2])
  with pytest.raises(voc_seg.MissingDataError, match="truncated or corrupt"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


def test_listed_id_without_files_is_an_error(tmp_path, seg11valid_file):
  make_mini_tree(tmp_path / "manual")
  (tmp_path / "manual" / voc_seg.SBD_ROOT / "cls" / "2008_000101.mat").unlink()
  with pytest.raises(voc_seg.MissingDataError, match="2008_000101"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


def _bad_mask_override(value):
  image, mask = _draw("2007_000039", "voc2012")
  mask[5, 5] = value
  return {("2007_000039", "voc2012"): (_jpeg_bytes(image),
                                        _palette_png_bytes(mask))}


def test_mask_value_out_of_range_names_the_id(tmp_path, seg11valid_file):
  make_mini_tree(tmp_path / "manual", overrides=_bad_mask_override(30))
  with pytest.raises(common.InvalidExampleError,
                     match=r"2007_000039.*outside.*30"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


def test_skip_invalid_counts_and_leaves_out(tmp_path, seg11valid_file):
  truth = make_mini_tree(tmp_path / "manual", overrides=_bad_mask_override(30))
  builder = _build(tmp_path / "manual", tmp_path / "data", seg11valid_file,
                   skip_invalid=True)
  assert builder.skipped_ids["voc2012_train"] == ["2007_000039"]
  assert builder.skipped_ids["train_aug"] == ["2007_000039"]
  records = _read_split(tmp_path / "data", "voc2012_train")
  assert [r["image_id"].decode() for r in records] == ["2007_000032",
                                                        "2008_000002"]
  np.testing.assert_array_equal(
      common.decode_mask(records[1]["segmentation_mask"]),
      truth["2008_000002", "voc2012"][1])


def test_corrupt_jpeg_names_the_id(tmp_path, seg11valid_file):
  image, mask = _draw("2008_000100", "sbd")
  jpeg = _jpeg_bytes(image)
  overrides = {("2008_000100", "sbd"): (jpeg[:len(jpeg) // 3],
                                        _mat_bytes(mask))}
  make_mini_tree(tmp_path / "manual", overrides=overrides)
  with pytest.raises(common.InvalidExampleError,
                     match="2008_000100: cannot decode the image"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


def test_sbd_mat_without_gtcls_names_the_id(tmp_path, seg11valid_file):
  image, _ = _draw("2008_000200", "sbd")
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, {"GTinst": {"Segmentation": np.zeros((2, 2))}})
  overrides = {("2008_000200", "sbd"): (_jpeg_bytes(image), buffer.getvalue())}
  make_mini_tree(tmp_path / "manual", overrides=overrides)
  with pytest.raises(common.InvalidExampleError,
                     match="2008_000200.*no GTcls.Segmentation"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


def test_image_and_mask_size_mismatch_names_the_id(tmp_path, seg11valid_file):
  image, mask = _draw("2008_000003", "voc2012")
  overrides = {("2008_000003", "voc2012"): (
      _jpeg_bytes(image[:-1]), _palette_png_bytes(mask))}
  make_mini_tree(tmp_path / "manual", overrides=overrides)
  with pytest.raises(common.InvalidExampleError, match="2008_000003: image is"):
    _build(tmp_path / "manual", tmp_path / "data", seg11valid_file)


# --------------------------------------------------------------------------
# Palette decoding.
# --------------------------------------------------------------------------


def test_palette_png_decodes_to_indices_not_colours():
  mask = np.array([[0, 1, 15], [20, 255, 7]], np.uint8)
  decoded = common.decode_palette_png(_palette_png_bytes(mask), "x")
  np.testing.assert_array_equal(decoded, mask)
  # The same file viewed as colours: index 15 (person) is (192, 128, 128).
  with Image.open(io.BytesIO(_palette_png_bytes(mask))) as image:
    rgb = np.asarray(image.convert("RGB"))
  np.testing.assert_array_equal(rgb[0, 2], [192, 128, 128])
  np.testing.assert_array_equal(rgb[1, 1], [224, 224, 192])


def test_palette_png_with_shuffled_palette_still_gives_indices():
  # Indices are the classes whatever the palette says.
  mask = np.array([[3, 4], [5, 255]], np.uint8)
  image = Image.fromarray(mask, mode="P")
  image.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  np.testing.assert_array_equal(
      common.decode_palette_png(buffer.getvalue(), "x"), mask)


def test_rgb_mask_png_is_refused_with_the_id():
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buffer, "PNG")
  with pytest.raises(common.InvalidExampleError, match="2011_000001.*'RGB'"):
    common.decode_palette_png(buffer.getvalue(), "2011_000001")


def test_sbd_mask_reader_returns_gtcls_segmentation():
  mask = np.array([[0, 3, 3], [7, 7, 0]], np.uint8)
  np.testing.assert_array_equal(
      voc_seg.read_sbd_mask(_mat_bytes(mask), "x", "x.mat"), mask)
  with pytest.raises(common.InvalidExampleError, match="non-integer"):
    voc_seg.read_sbd_mask(_mat_bytes(np.array([[0.5]])), "x", "x.mat")


# --------------------------------------------------------------------------
# synthetic_shapes.
# --------------------------------------------------------------------------


def _tiny_config(**kwargs):
  kwargs.setdefault("name", "test")
  return synthetic_shapes.SyntheticShapesConfig(
      num_train=6, num_val=3, min_size=24, max_size=40, **kwargs)


def _synthetic_records(data_dir, config, split):
  builder = synthetic_shapes.SyntheticShapes(config=config,
                                             data_dir=str(data_dir))
  builder.download_and_prepare()
  source = builder.as_data_source(split,
                                  decoders=common.skip_decoding_decoders())
  return builder, [source[i] for i in range(len(source))]


def test_synthetic_shapes_is_labelled_synthetic_everywhere(tmp_path):
  builder, records = _synthetic_records(tmp_path, _tiny_config(),
                                        "synthetic_train")
  assert set(builder.info.splits) == {"synthetic_train", "synthetic_val"}
  assert builder.info.splits["synthetic_train"].num_examples == 6
  assert builder.info.splits["synthetic_val"].num_examples == 3
  assert builder.info.metadata["synthetic"] is True
  assert "SYNTHETIC" in builder.info.description
  assert len(records) == 6
  for record in records:
    assert record["image_id"].decode().startswith("synthetic_train_")
    assert record["label_source"] == b"synthetic"


def test_synthetic_shapes_masks_match_image_colours(tmp_path):
  _, records = _synthetic_records(tmp_path, _tiny_config(), "synthetic_val")
  colors = voc.voc_colormap().astype(float)
  for record in records:
    image = common.decode_image(record["image"]).astype(float)
    mask = common.decode_mask(record["segmentation_mask"])
    assert 24 <= mask.shape[0] <= 40 and 24 <= mask.shape[1] <= 40
    assert set(np.unique(mask)) <= set(range(21)) | {255}
    assert (mask > 0).any() and (mask < 255).any()
    for label in set(np.unique(mask)) - {0, 255}:
      region = mask == label
      mean = image[region].mean(axis=0)
      if region.sum() >= 30:  # JPEG blurs tiny regions.
        assert np.abs(mean - colors[label]).max() < 40, (label, mean)


def test_synthetic_shapes_is_deterministic_per_seed(tmp_path):
  _, first = _synthetic_records(tmp_path / "a", _tiny_config(), "synthetic_val")
  _, again = _synthetic_records(tmp_path / "b", _tiny_config(), "synthetic_val")
  _, other = _synthetic_records(tmp_path / "c", _tiny_config(seed=1),
                                "synthetic_val")
  assert [r["image"] for r in first] == [r["image"] for r in again]
  assert [r["segmentation_mask"] for r in first] != [
      r["segmentation_mask"] for r in other]


# --------------------------------------------------------------------------
# prepare_data CLI.
# --------------------------------------------------------------------------


def test_prepare_data_builds_synthetic(tmp_path, capsys):
  assert prepare_data.main(["--dataset", "synthetic_shapes/tiny",
                            "--data_dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "SYNTHETIC" in out
  assert re.search(r"synthetic_train\s+16 examples", out)
  assert re.search(r"synthetic_val\s+10 examples", out)
  assert (tmp_path / "synthetic_shapes" / "tiny" / "1.0.0").is_dir()


def test_prepare_data_voc_seg_needs_manual_dir(tmp_path, capsys):
  assert prepare_data.main(["--dataset", "voc_seg",
                            "--data_dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "--manual_dir" in err and voc_seg.VOC_ARCHIVE in err


def test_prepare_data_voc_seg_from_archives(tmp_path, capsys, seg11valid_file,
                                            monkeypatch):
  make_mini_tree(tmp_path / "tree")
  make_archives(tmp_path / "tree", tmp_path / "manual")
  monkeypatch.setattr(voc_seg, "SEG11VALID_FILE", pathlib.Path(seg11valid_file))
  args = ["--dataset", "voc_seg", "--manual_dir", str(tmp_path / "manual"),
          "--data_dir", str(tmp_path / "data")]
  # The mini lists are not the official sizes: refused unless told.
  assert prepare_data.main(args) == 2
  assert "expected 1,464 ids, found 3" in capsys.readouterr().err
  assert prepare_data.main(args + ["--no_check_split_sizes"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"train_aug\s+6 examples", out)
  assert re.search(r"seg11valid\s+1 examples", out)


@pytest.mark.parametrize("mode, file_format", [
    ("CMYK", "JPEG"), ("RGBA", "PNG"), ("L", "JPEG"), ("P", "PNG")])
def test_images_of_other_modes_are_stored_as_rgb(mode, file_format):
  """The image feature is declared with 3 channels: a CMYK/greyscale JPEG or
  an RGBA/palette PNG is stored as RGB (what the pipeline's decoder makes
  of the original), not in its own mode."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:20, 0:30]  # Smooth, as photos are: JPEG keeps it well.
  rgb = Image.fromarray(np.stack([8 * x, 12 * y, 4 * (x + y)],
                                 -1).astype(np.uint8))
  source = rgb.convert(mode)
  if mode == "RGBA":
    source.putalpha(Image.fromarray(
        rng.integers(0, 256, (20, 30), dtype=np.uint8)))
  buffer = io.BytesIO()
  source.save(buffer, file_format, **({"quality": 95}
                                      if file_format == "JPEG" else {}))
  data = buffer.getvalue()
  example = common.make_example("x", data, np.zeros((20, 30), np.uint8),
                                "folder", "mask.png")
  with Image.open(io.BytesIO(example[common.IMAGE])) as stored:
    assert stored.mode == "RGB" and stored.format == file_format
    pixels = np.asarray(stored)
  assert pixels.shape == (20, 30, 3)
  assert (example[common.HEIGHT], example[common.WIDTH]) == (20, 30)
  expected = common.decode_image(data).astype(int)  # The original, as RGB.
  tolerance = 0 if file_format == "PNG" else 8  # JPEG encoded once more.
  assert np.abs(pixels.astype(int) - expected).mean() <= tolerance / 4
  assert np.abs(pixels.astype(int) - expected).max() <= 8 * tolerance + 1

  rgb_buffer = io.BytesIO()
  rgb.save(rgb_buffer, "JPEG")  # RGB files are stored byte for byte.
  assert common.make_example("y", rgb_buffer.getvalue(),
                             np.zeros((20, 30), np.uint8), "folder",
                             "m.png")[common.IMAGE] == rgb_buffer.getvalue()


def test_opening_unbuilt_builders_leaves_no_temporary_folders(tmp_path,
                                                                monkeypatch):
  """TFDS makes a /tmp folder to fetch the info of an unbuilt dataset from its
  GCS bucket and never removes it; none of these datasets is there."""
  from fcn_jax import datasets  # pylint: disable=g-import-not-at-top
  temp = tmp_path / "tmp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  for name in datasets.BUILDERS:
    builder = datasets.builder(name, str(tmp_path / "tfds"))
    assert not builder.data_path.exists()  # Not built: the case in point.
    assert isinstance(builder.info, common.LocalDatasetInfo), name
  assert not list(temp.iterdir())
