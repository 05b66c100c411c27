"""Tests of the nyud, sift_flow and pascal_context builders.

Each fixture writes a few examples in the real formats and layouts (colour
and HHA PNGs, 16-bit depth PNGs, JPEGs, ``.mat`` files with the real field
names written by scipy, a tar.gz, a zip, an uncompressed tar) with tiny id
lists. The expected masks come from a re-implementation of the reference
data layers' arithmetic (uint8 cast and wrap-around), not from the builders.
"""

import io
import re
import tarfile
import zipfile

import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow_datasets as tfds

from fcn_jax import prepare_data
from fcn_jax.datasets import archives
from fcn_jax.datasets import common
from fcn_jax.datasets import manual
from fcn_jax.datasets import nyud
from fcn_jax.datasets import pascal_context
from fcn_jax.datasets import sift_flow


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def _jpeg(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "JPEG", quality=95)
  return buffer.getvalue()


def _mat(**fields):
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, fields)
  return buffer.getvalue()


def _write(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def _write_list(path, ids):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(ids) + "\n")


def _tar(source_dir, archive, mode):
  archive.parent.mkdir(parents=True, exist_ok=True)
  with tarfile.open(archive, mode) as tar:
    for child in sorted(source_dir.iterdir()):
      tar.add(child, arcname=child.name)


def _zip(source_dir, archive, extra=()):
  archive.parent.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(archive, "w") as zf:
    for path in sorted(source_dir.rglob("*")):
      if path.is_file():
        zf.write(path, path.relative_to(source_dir).as_posix())
    for name, data in extra:
      zf.writestr(name, data)


def _build(builder_cls, manual_dir, data_dir, **kwargs):
  kwargs.setdefault("check_split_sizes", False)
  builder = builder_cls(data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def _records(builder, split, keys):
  """All records of a split, with the image features ``keys`` as bytes."""
  source = builder.as_data_source(split,
                                  decoders=common.skip_decoding_decoders(keys))
  return [source[i] for i in range(len(source))]


def _reference_shift(raw):
  """The reference layers' ``label.astype(np.uint8); label -= 1``."""
  label = np.asarray(raw).astype(np.uint8)
  label -= 1
  return label


# --------------------------------------------------------------------------
# NYUDv2.
# --------------------------------------------------------------------------

NYUD_SPLITS = {"train": ["5001", "5010"], "val": ["5003"], "test": ["6449"]}


def _nyud_draw(image_id):
  rng = np.random.default_rng(int(image_id))
  height, width = (int(v) for v in rng.integers(16, 28, size=2))
  color = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  hha = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  depth = rng.integers(400, 10000, (height, width), dtype=np.uint16)
  labels = rng.integers(0, 41, (height, width)).astype(np.uint8)
  labels[0, :3] = [0, 1, 40]  # Void and both ends of the class range.
  return color, hha, depth, labels


def make_nyud_tree(root, overrides=None):
  """Writes the reference's nyud layout under ``root``; returns the truth."""
  overrides = overrides or {}
  truth = {}
  for image_id in sum(NYUD_SPLITS.values(), []):
    color, hha, depth, labels = _nyud_draw(image_id)
    files = {
        "color": _png(color), "hha": _png(hha), "depth": _png(depth),
        # Gupta's labels are stored as uint8; one id as double to check
        # that integer-valued floats are read too.
        "label": _mat(segmentation=labels if image_id != "5010"
                      else labels.astype(np.float64)),
    }
    files.update(overrides.get(image_id, {}))
    for key, relpath in (("color", "data/images"), ("hha", "data/hha"),
                         ("depth", "data/depth")):
      if files[key] is not None:
        _write(root / relpath / f"img_{image_id}.png", files[key])
    if files["label"] is not None:
      _write(root / "segmentation" / f"img_{image_id}.mat", files["label"])
    truth[image_id] = (files["color"], files["hha"], depth, labels)
  return truth


@pytest.fixture
def nyud_lists(tmp_path):
  for split, ids in NYUD_SPLITS.items():
    _write_list(tmp_path / "lists" / f"nyud_{split}.txt", ids)
  return str(tmp_path / "lists")


def _check_nyud(builder, truth):
  expected = {**NYUD_SPLITS,
              "trainval": NYUD_SPLITS["train"] + NYUD_SPLITS["val"]}
  assert set(builder.info.splits) == set(expected)
  for split, ids in expected.items():
    records = _records(builder, split, nyud.ENCODED_FEATURES)
    assert [r["image_id"].decode() for r in records] == ids, split
    for record in records:
      color, hha, depth, labels = truth[record["image_id"].decode()]
      assert record["image"] == color and record["hha"] == hha
      np.testing.assert_array_equal(common.decode_depth(record["depth"]),
                                    depth)
      mask = common.decode_mask(record["segmentation_mask"])
      np.testing.assert_array_equal(mask, _reference_shift(labels))
      assert (record["height"], record["width"]) == labels.shape
      assert mask.max() == 255 and 39 in mask and 0 in mask


def test_nyud_from_tar_gz_without_a_top_folder(tmp_path, nyud_lists):
  truth = make_nyud_tree(tmp_path / "tree")
  _tar(tmp_path / "tree", tmp_path / "manual" / nyud.ARCHIVE, "w:gz")
  builder = _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=nyud_lists)
  _check_nyud(builder, truth)
  assert builder.info.metadata["num_classes"] == 40
  assert builder.info.metadata["class_names"][:3] == ["wall", "floor",
                                                      "cabinet"]


def test_nyud_from_an_extracted_folder_one_level_down(tmp_path, nyud_lists):
  truth = make_nyud_tree(tmp_path / "manual" / "nyud")
  builder = _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=nyud_lists)
  _check_nyud(builder, truth)


def test_nyud_tar_gz_extraction_is_reused(tmp_path, nyud_lists):
  truth = make_nyud_tree(tmp_path / "tree" / "nyud")
  archive = tmp_path / "manual" / nyud.ARCHIVE
  _tar(tmp_path / "tree", archive, "w:gz")
  _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
         id_list_dir=nyud_lists)
  # Build again after the prepared files are gone: with the archive
  # overwritten by a gzip header and zeros of the same size, only the
  # finished extraction can give the images back.
  for path in sorted((tmp_path / "data" / "nyud").rglob("*"), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  archive.write_bytes(b"\x1f\x8b" + b"\0" * (archive.stat().st_size - 2))
  builder = _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=nyud_lists)
  _check_nyud(builder, truth)
  # An archive of another size is extracted again (and this one is corrupt).
  archive.write_bytes(b"\x1f\x8b" + b"\0" * 100)
  with pytest.raises(archives.MissingDataError, match="truncated or corrupt"):
    archives.extract_members(
        archive, tmp_path / "data" / "downloads" / "extracted" / "nyud_data",
        nyud.SOURCE.member_pattern, nyud.URL)


def test_nyud_split_sizes_are_checked(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "manual")
  with pytest.raises(manual.SplitSizeError) as error:
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists, check_split_sizes=True)
  message = str(error.value)
  for text in ("train: expected 381 ids, found 2",
               "val: expected 414 ids, found 1",
               "trainval: expected 795 ids, found 3",
               "test: expected 654 ids, found 1", "--no_check_split_sizes"):
    assert text in message


def test_nyud_missing_archive_names_it_and_the_url(tmp_path, nyud_lists):
  (tmp_path / "manual").mkdir()
  with pytest.raises(archives.MissingDataError) as error:
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)
  message = str(error.value)
  for text in (nyud.ARCHIVE, nyud.URL, "data/images", "segmentation/img_"):
    assert text in message


def test_nyud_missing_hha_file_names_the_id_and_file(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "manual", overrides={"5003": {"hha": None}})
  with pytest.raises(archives.MissingDataError,
                     match=r"5003 \(split val\).*data/hha/img_5003\.png"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_label_outside_the_classes_names_the_file(tmp_path, nyud_lists):
  labels = _nyud_draw("5010")[3].copy()
  labels[2, 2] = 41
  make_nyud_tree(tmp_path / "manual",
                 overrides={"5010": {"label": _mat(segmentation=labels)}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"5010: .*img_5010\.mat has labels outside "
                           r"\{0\.\.40\}: 41\. \(split train\)\. .*--skip_invalid"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_skip_invalid_leaves_out_and_lists(tmp_path, nyud_lists):
  color = _png(_nyud_draw("5001")[0])
  truth = make_nyud_tree(tmp_path / "manual",
                         overrides={"5001": {"color": color[:len(color) // 2]}})
  builder = _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=nyud_lists, skip_invalid=True)
  assert builder.skipped_ids["train"] == ["5001"]
  assert builder.skipped_ids["trainval"] == ["5001"]
  records = _records(builder, "trainval", nyud.ENCODED_FEATURES)
  assert [r["image_id"].decode() for r in records] == ["5010", "5003"]
  assert records[0]["image"] == truth["5010"][0]


def test_nyud_corrupt_colour_png_names_the_id(tmp_path, nyud_lists):
  color = _png(_nyud_draw("6449")[0])
  make_nyud_tree(tmp_path / "manual",
                 overrides={"6449": {"color": color[:len(color) // 2]}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"6449: cannot decode the image .*img_6449\.png"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_colour_depth_is_refused(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "manual", overrides={
      "5003": {"depth": _png(_nyud_draw("5003")[0])}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"5003: .*depth/img_5003\.png has PIL mode 'RGB'"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_hha_of_another_size_is_refused(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "manual", overrides={
      "5003": {"hha": _png(_nyud_draw("5003")[1][:-2])}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"5003: image is \d+x\d+ but .*hha/img_5003"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_truncated_archive(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "tree")
  archive = tmp_path / "manual" / nyud.ARCHIVE
  _tar(tmp_path / "tree", archive, "w:gz")
  archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
  with pytest.raises(archives.MissingDataError,
                     match=f"truncated or corrupt.*{re.escape(nyud.URL)}"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


def test_nyud_train_and_val_must_not_overlap(tmp_path, nyud_lists):
  make_nyud_tree(tmp_path / "manual")
  _write_list(tmp_path / "lists" / "nyud_val.txt", ["5003", "5001"])
  with pytest.raises(ValueError, match="share ids.*5001"):
    _build(nyud.Nyud, tmp_path / "manual", tmp_path / "data",
           id_list_dir=nyud_lists)


# --------------------------------------------------------------------------
# SIFT Flow.
# --------------------------------------------------------------------------

SIFT_SPLITS = {"trainval": ["coast_natu975", "insidecity_art947"],
               "test": ["street_par151"]}
_CATEGORY = sift_flow.CATEGORY_DIR


def _sift_draw(image_id):
  rng = np.random.default_rng(sum(map(ord, image_id)))
  image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
  semantic = rng.integers(0, 34, (24, 24)).astype(np.float64)
  semantic[0, :3] = [0, 1, 33]
  geometric = rng.integers(-1, 4, (24, 24)).astype(np.int16)
  geometric[0, :5] = [-1, 0, 1, 2, 3]
  return image, semantic, geometric


def make_sift_tree(root, overrides=None):
  overrides = overrides or {}
  truth = {}
  for image_id in sum(SIFT_SPLITS.values(), []):
    image, semantic, geometric = _sift_draw(image_id)
    files = {"image": _jpeg(image), "semantic": _mat(S=semantic),
             "geometric": _mat(S=geometric)}
    files.update(overrides.get(image_id, {}))
    for key, relpath, ext in (("image", "Images", "jpg"),
                              ("semantic", "SemanticLabels", "mat"),
                              ("geometric", "GeoLabels", "mat")):
      if files[key] is not None:
        _write(root / relpath / _CATEGORY / f"{image_id}.{ext}", files[key])
    truth[image_id] = (files["image"], semantic, geometric)
  return truth


@pytest.fixture
def sift_lists(tmp_path):
  for split, ids in SIFT_SPLITS.items():
    _write_list(tmp_path / "lists" / f"siftflow_{split}.txt", ids)
  return str(tmp_path / "lists")


def _reference_geometric(raw):
  label = np.array(raw)
  label[label == -1] = 0
  return _reference_shift(label)


def _check_sift(builder, truth):
  for split, ids in SIFT_SPLITS.items():
    records = _records(builder, split, sift_flow.ENCODED_FEATURES)
    assert [r["image_id"].decode() for r in records] == ids
    for record in records:
      jpeg, semantic, geometric = truth[record["image_id"].decode()]
      assert record["image"] == jpeg
      np.testing.assert_array_equal(
          common.decode_mask(record["semantic_mask"]),
          _reference_shift(semantic))
      geo = common.decode_mask(record["geometric_mask"])
      np.testing.assert_array_equal(geo, _reference_geometric(geometric))
      assert set(np.unique(geo)) == {0, 1, 2, 255}


def test_sift_flow_from_the_zip_with_a_top_folder(tmp_path, sift_lists):
  truth = make_sift_tree(tmp_path / "tree" / "SiftFlowDataset")
  # macOS zips carry a __MACOSX shadow tree, which must not be taken.
  _zip(tmp_path / "tree", tmp_path / "manual" / sift_flow.ARCHIVE, extra=[
      (f"__MACOSX/Images/{_CATEGORY}/._coast_natu975.jpg", b"junk")])
  builder = _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=sift_lists)
  _check_sift(builder, truth)
  # As training reads it: from the prepared files, without this code.
  metadata = tfds.builder_from_directory(builder.data_dir).info.metadata
  assert metadata["num_classes"] == 33
  assert metadata["geometric_class_names"] == ["sky", "horizontal",
                                               "vertical"]
  assert set(metadata["classes_absent_from_test"]) <= set(
      metadata["class_names"])


def test_sift_flow_from_an_extracted_folder(tmp_path, sift_lists):
  truth = make_sift_tree(tmp_path / "manual")
  builder = _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=sift_lists)
  _check_sift(builder, truth)


def test_sift_flow_split_sizes_are_checked(tmp_path, sift_lists):
  make_sift_tree(tmp_path / "manual")
  with pytest.raises(manual.SplitSizeError,
                     match=r"trainval: expected 2,486 ids, found 2(.|\n)*"
                           r"test: expected 200 ids, found 1"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists, check_split_sizes=True)


def test_sift_flow_missing_zip_names_it_and_the_url(tmp_path, sift_lists):
  (tmp_path / "manual").mkdir()
  with pytest.raises(archives.MissingDataError) as error:
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)
  assert sift_flow.ARCHIVE in str(error.value)
  assert sift_flow.URL in str(error.value)


def test_sift_flow_corrupt_zip(tmp_path, sift_lists):
  make_sift_tree(tmp_path / "tree")
  archive = tmp_path / "manual" / sift_flow.ARCHIVE
  _zip(tmp_path / "tree", archive)
  archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
  with pytest.raises(archives.MissingDataError, match="not a readable zip"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


def test_sift_flow_zip_of_something_else(tmp_path, sift_lists):
  _write(tmp_path / "tree" / "readme.txt", b"not SIFT Flow")
  _zip(tmp_path / "tree", tmp_path / "manual" / sift_flow.ARCHIVE)
  with pytest.raises(archives.MissingDataError,
                     match=f"has no Images/{_CATEGORY}/ folder"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


def test_sift_flow_missing_geometric_labels(tmp_path, sift_lists):
  make_sift_tree(tmp_path / "manual",
                 overrides={"street_par151": {"geometric": None}})
  with pytest.raises(archives.MissingDataError,
                     match=r"street_par151 \(split test\).*GeoLabels"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


def test_sift_flow_geometric_label_out_of_range(tmp_path, sift_lists):
  geometric = _sift_draw("coast_natu975")[2].copy()
  geometric[3, 3] = 4
  make_sift_tree(tmp_path / "manual", overrides={
      "coast_natu975": {"geometric": _mat(S=geometric)}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"coast_natu975: .*GeoLabels.*outside "
                           r"\{-1\.\.3\}: 4"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


def test_sift_flow_semantic_mat_without_s(tmp_path, sift_lists):
  make_sift_tree(tmp_path / "manual", overrides={
      "insidecity_art947": {"semantic": _mat(names=np.array(["sky"]))}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"insidecity_art947: .*SemanticLabels.* has no S "
                           r"\(keys: \['names'\]\)"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


def test_sift_flow_skip_invalid(tmp_path, sift_lists):
  semantic = _sift_draw("insidecity_art947")[1].copy()
  semantic[1, 1] = 34
  make_sift_tree(tmp_path / "manual", overrides={
      "insidecity_art947": {"semantic": _mat(S=semantic)}})
  builder = _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
                   id_list_dir=sift_lists, skip_invalid=True)
  assert builder.skipped_ids == {"trainval": ["insidecity_art947"], "test": []}
  assert builder.info.splits["trainval"].num_examples == 1


def test_sift_flow_unannotated_images_are_refused_in_the_lists(
    tmp_path, sift_lists):
  make_sift_tree(tmp_path / "manual")
  _write_list(tmp_path / "lists" / "siftflow_trainval.txt",
              SIFT_SPLITS["trainval"] + ["highway_bost181"])
  with pytest.raises(ValueError, match="highway_bost181, which have no"):
    _build(sift_flow.SiftFlow, tmp_path / "manual", tmp_path / "data",
           id_list_dir=sift_lists)


# --------------------------------------------------------------------------
# PASCAL-Context.
# --------------------------------------------------------------------------

CONTEXT_SPLITS = {"train": ["2008_000002", "2010_000003"],
                  "val": ["2008_000008"]}
SHIPPED_RAW = pascal_context.parse_label_list(
    pascal_context.RAW_LABELS_FILE.read_text(), "shipped")


def _context_draw(image_id, raw_ids):
  rng = np.random.default_rng(int(image_id.replace("_", "")))
  height, width = (int(v) for v in rng.integers(16, 30, size=2))
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  label_map = rng.choice(raw_ids, size=(height, width)).astype(np.uint16)
  return image, label_map


def _reference_context_mask(label_map, raw_labels):
  """pascalcontext_layers.py: 59 names (renamed) looked up in the raw list."""
  raw_names = [name.replace(" ", "") for _, name in raw_labels]
  raw_index = [index for index, _ in raw_labels]
  names_59 = [line.split(":", 1)[1].strip().replace(" ", "") for line in
              pascal_context.CLASSES_FILE.read_text().splitlines()[1:]]
  for task_name, main_name in (("diningtable", "table"),
                               ("bedcloth", "bedclothes"),
                               ("clothes", "cloth")):
    names_59[names_59.index(task_name)] = main_name
  mask = np.zeros_like(label_map, dtype=np.uint8)
  for k, name in enumerate(names_59):
    mask[label_map == raw_index[raw_names.index(name)]] = k + 1
  return mask


def make_context_tree(root, raw_labels=SHIPPED_RAW, overrides=None,
                      labels_txt=True):
  """VOCdevkit/VOC2010 and a Context folder (trainval/, labels.txt)."""
  overrides = overrides or {}
  voc_root = root / "VOCdevkit" / "VOC2010"
  truth = {}
  # Table, cloth, bedclothes (the renamed three), sky, motorbike, tvmonitor,
  # aeroplane and accordion (not a task class).
  raw_ids = [397, 80, 19, 360, 258, 427, 2, 1]
  for image_id in sum(CONTEXT_SPLITS.values(), []):
    image, label_map = _context_draw(image_id, raw_ids)
    files = {"image": _jpeg(image), "label": _mat(LabelMap=label_map)}
    files.update(overrides.get(image_id, {}))
    if files["image"] is not None:
      _write(voc_root / "JPEGImages" / f"{image_id}.jpg", files["image"])
    if files["label"] is not None:
      _write(root / "context" / "trainval" / f"{image_id}.mat", files["label"])
    truth[image_id] = (files["image"],
                       _reference_context_mask(label_map, raw_labels))
  for split, ids in CONTEXT_SPLITS.items():
    _write_list(voc_root / "ImageSets" / "Main" / f"{split}.txt", ids)
  _write_list(voc_root / "ImageSets" / "Main" / "aeroplane_train.txt",
              ["2008_000002 -1"])
  if labels_txt:
    _write_list(root / "context" / "labels.txt",
                [f"{index}: {name}" for index, name in raw_labels])
  return truth


def _context_archives(tree_root, manual_dir):
  manual_dir.mkdir(parents=True, exist_ok=True)
  with tarfile.open(manual_dir / pascal_context.VOC_ARCHIVE, "w") as tar:
    tar.add(tree_root / "VOCdevkit", arcname="VOCdevkit")
  _tar(tree_root / "context", manual_dir / pascal_context.CONTEXT_ARCHIVE,
       "w:gz")


def _check_context(builder, truth):
  for split, ids in CONTEXT_SPLITS.items():
    records = _records(builder, split, pascal_context.ENCODED_FEATURES)
    assert [r["image_id"].decode() for r in records] == ids
    for record in records:
      jpeg, mask = truth[record["image_id"].decode()]
      assert record["image"] == jpeg
      stored = common.decode_mask(record["segmentation_mask"])
      np.testing.assert_array_equal(stored, mask)
      assert 0 in stored and stored.max() <= 59


def test_pascal_context_from_the_archives(tmp_path):
  truth = make_context_tree(tmp_path / "tree")
  _context_archives(tmp_path / "tree", tmp_path / "manual")
  builder = _build(pascal_context.PascalContext, tmp_path / "manual",
                   tmp_path / "data")
  _check_context(builder, truth)
  names = builder.info.metadata["class_names"]
  assert builder.info.metadata["num_classes"] == len(names) == 60
  assert names[0] == "background" and names[11] == "diningtable"


def test_pascal_context_from_extracted_folders(tmp_path):
  truth = make_context_tree(tmp_path / "manual")
  builder = _build(pascal_context.PascalContext, tmp_path / "manual",
                   tmp_path / "data")
  _check_context(builder, truth)


def test_pascal_context_reads_the_label_list_in_manual_dir(tmp_path):
  # Indices of 'table' (397) and 'accordion' (1) swapped: a LabelMap value
  # means what the release's labels.txt says, not what the shipped copy says.
  swapped = [(1 if index == 397 else 397 if index == 1 else index, name)
             for index, name in SHIPPED_RAW]
  truth = make_context_tree(tmp_path / "manual", raw_labels=swapped)
  builder = _build(pascal_context.PascalContext, tmp_path / "manual",
                   tmp_path / "data")
  _check_context(builder, truth)
  # Without a labels.txt the shipped copy is used.
  truth = make_context_tree(tmp_path / "manual2", labels_txt=False)
  builder = _build(pascal_context.PascalContext, tmp_path / "manual2",
                   tmp_path / "data2")
  _check_context(builder, truth)


def test_pascal_context_label_list_without_a_task_class(tmp_path):
  make_context_tree(tmp_path / "manual")
  _write_list(tmp_path / "manual" / "context" / "labels.txt",
              [f"{i}: {n}" for i, n in SHIPPED_RAW if n != "sky"])
  with pytest.raises(ValueError,
                     match=r"labels\.txt has no label 'sky' \(class 50"):
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data")


def test_pascal_context_raw_label_not_in_the_list(tmp_path):
  label_map = _context_draw("2008_000008", [1, 2])[1].copy()
  label_map[0, 0] = 460
  make_context_tree(tmp_path / "manual", overrides={
      "2008_000008": {"label": _mat(LabelMap=label_map)}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"2008_000008: .*trainval/2008_000008\.mat has "
                           r"labels outside .*: 460"):
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data")


def test_pascal_context_missing_annotation(tmp_path):
  make_context_tree(tmp_path / "manual",
                    overrides={"2010_000003": {"label": None}})
  with pytest.raises(archives.MissingDataError,
                     match=r"2010_000003 \(split train\).*trainval"):
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data")


def test_pascal_context_missing_archives_name_both(tmp_path):
  make_context_tree(tmp_path / "tree")
  _context_archives(tmp_path / "tree", tmp_path / "manual")
  (tmp_path / "manual" / pascal_context.CONTEXT_ARCHIVE).unlink()
  with pytest.raises(archives.MissingDataError) as error:
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data")
  assert pascal_context.CONTEXT_ARCHIVE in str(error.value)
  assert pascal_context.CONTEXT_URL in str(error.value)
  (tmp_path / "empty").mkdir()
  with pytest.raises(archives.MissingDataError, match=re.escape(
      pascal_context.VOC_URL)):
    _build(pascal_context.PascalContext, tmp_path / "empty",
           tmp_path / "data")


def test_pascal_context_image_and_labels_of_different_sizes(tmp_path):
  image = _context_draw("2008_000002", [1])[0]
  make_context_tree(tmp_path / "manual", overrides={
      "2008_000002": {"image": _jpeg(image[:, :-1])}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"2008_000002: image is \d+x\d+ but .*\.mat is"):
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data")


def test_prepare_data_pascal_context(tmp_path, capsys):
  label_map = _context_draw("2010_000003", [1])[1].copy()
  label_map[1, 1] = 9999
  make_context_tree(tmp_path / "bad", overrides={
      "2010_000003": {"label": _mat(LabelMap=label_map)}})
  _context_archives(tmp_path / "bad", tmp_path / "manual")
  args = ["--dataset", "pascal_context", "--manual_dir",
          str(tmp_path / "manual"), "--data_dir", str(tmp_path / "data")]
  assert prepare_data.main(args) == 2
  err = capsys.readouterr().err
  assert "expected 4,998 ids, found 2" in err and "expected 5,105" in err
  assert prepare_data.main(args + ["--no_check_split_sizes"]) == 2
  err = capsys.readouterr().err
  # The file is named as the archive's member, not its extracted copy.
  assert re.search(r"error: 2010_000003: \S*trainval\.tar\.gz:trainval/"
                   r"2010_000003\.mat .*: 9999\. \(split train\)", err)
  assert "Traceback" not in err
  assert prepare_data.main(args + ["--no_check_split_sizes",
                                   "--skip_invalid"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"train\s+1 examples", out)
  assert re.search(r"val\s+1 examples", out)
  assert "skipped 1 invalid examples in train: 2010_000003" in out


def test_a_split_left_empty_by_skip_invalid_is_an_error(tmp_path):
  image = _context_draw("2008_000008", [1])[0]
  make_context_tree(tmp_path / "manual", overrides={
      "2008_000008": {"image": _jpeg(image)[:50]}})
  with pytest.raises(common.InvalidExampleError,
                     match=r"Every example of split val is invalid \(1 "
                           r"skipped: 2008_000008\)"):
    _build(pascal_context.PascalContext, tmp_path / "manual",
           tmp_path / "data", skip_invalid=True)


@pytest.mark.parametrize("dataset,archive", [
    ("nyud", nyud.ARCHIVE), ("sift_flow", sift_flow.ARCHIVE),
    ("pascal_context", pascal_context.CONTEXT_ARCHIVE)])
def test_prepare_data_needs_manual_dir(tmp_path, capsys, dataset, archive):
  assert prepare_data.main(["--dataset", dataset,
                            "--data_dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "--manual_dir" in err and archive in err


# --------------------------------------------------------------------------
# The shipped lists.
# --------------------------------------------------------------------------


def test_shipped_nyud_lists_have_the_reference_sizes():
  ids = {split: manual.read_id_list(manual.SPLITS_DIR / f"nyud_{split}.txt")
         for split in nyud.LISTED_SPLITS}
  sizes = {split: len(split_ids) for split, split_ids in ids.items()}
  assert sizes == {"train": 381, "val": 414, "test": 654}
  assert sizes["train"] + sizes["val"] == nyud.SPLIT_SIZES["trainval"]
  all_ids = sum(ids.values(), [])
  # The 1,449 labelled NYUDv2 images are numbered 5001..6449.
  assert len(set(all_ids)) == 1449
  assert {int(i) for i in all_ids} == set(range(5001, 6450))
  assert len(nyud.read_class_names()) == 40


def test_shipped_sift_flow_lists():
  ids = {split: manual.read_id_list(
      manual.SPLITS_DIR / f"siftflow_{split}.txt")
         for split in sift_flow.SPLIT_SIZES}
  assert {s: len(i) for s, i in ids.items()} == sift_flow.SPLIT_SIZES
  assert not set(ids["trainval"]) & set(ids["test"])
  assert not set(sift_flow.UNANNOTATED_IMAGES) & set(sum(ids.values(), []))
  semantic, geometric = sift_flow.read_class_names()
  assert (semantic[0], semantic[8], semantic[10], semantic[15],
          semantic[32]) == ("awning", "cow", "desert", "moon", "window")
  assert geometric == ["sky", "horizontal", "vertical"]


def test_shipped_context_lists_map_every_task_class():
  names = pascal_context.read_class_names()
  lookup = pascal_context.label_lookup(SHIPPED_RAW, names[1:], "shipped")
  assert len(SHIPPED_RAW) == 459
  assert sorted(lookup[lookup > 0].tolist()) == list(range(1, 60))
  raw = {name: index for index, name in SHIPPED_RAW}
  # docs/reference.md §8.4: the three renamed classes.
  assert lookup[raw["table"]] == names.index("diningtable")
  assert lookup[raw["bedclothes"]] == names.index("bedcloth")
  assert lookup[raw["cloth"]] == names.index("clothes")
  assert lookup[raw["accordion"]] == 0


# --------------------------------------------------------------------------
# archives.
# --------------------------------------------------------------------------


def test_folder_prefixes_in_archives_skip_junk_and_prefer_shallow():
  names = ["__MACOSX/x/data/images/a.png", "top/inner/data/images/b.png",
           "top/data/images/c.png", "a/b/c/data/images/too_deep.png",
           "data/imagesX/d.png"]
  assert archives._prefixes_of(names, "data/images") == ["top/",
                                                          "top/inner/"]


def test_extract_members_skips_unsafe_and_unwanted_names(tmp_path):
  archive = tmp_path / "a.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for name in ("keep/x.mat", "../escape/x.mat", "keep/x.txt"):
      info = tarfile.TarInfo(name)
      info.size = 3
      tar.addfile(info, io.BytesIO(b"abc"))
  out = archives.extract_members(archive, tmp_path / "out",
                                 re.compile(r"\.mat$"), "url")
  assert (out / "keep" / "x.mat").read_bytes() == b"abc"
  assert not (out / "keep" / "x.txt").exists()
  assert not (tmp_path / "escape").exists()


def test_folder_tree_finds_the_marker_at_most_two_levels_down(tmp_path):
  for relpath in ("a/data/images", "b/c/data/images", "d/e/f/data/images",
                  "__MACOSX/data/images", "g/data/imagesX"):
    (tmp_path / relpath).mkdir(parents=True)
  tree = archives.FolderTree(tmp_path)
  assert tree.find_folders("data/images") == ["a/", "b/c/"]
  (tmp_path / "data" / "images").mkdir(parents=True)
  assert tree.find_folders("data/images") == ["", "a/", "b/c/"]
