"""PASCAL-Context, 59 classes + background, as a TFDS dataset.

Reads the VOC2010 release (the images and the train/val lists) and the
PASCAL-Context ``trainval`` annotations (docs/reference.md §8.4) from
``manual_dir``, as downloaded or extracted, and writes ``array_record`` files
that ``tfds.data_source`` and grain read without TensorFlow. Registered as
``pascal_context``.

Features (besides ``image_id``, ``height``, ``width``):

* ``image``: the VOC2010 JPEG, byte for byte;
* ``segmentation_mask``: ``trainval/<id>.mat`` field ``LabelMap`` (the 459
  raw labels of the Context release's ``labels.txt``) mapped to the 59-class
  task as the reference's ``pascalcontext_layers.py`` does: matched by name
  (spaces removed) to the 59-class list, with the three names that differ
  between the two lists renamed (diningtable -> table, bedcloth ->
  bedclothes, clothes -> cloth); output index = position in the 59-class
  list + 1; every other label (and 0) -> 0, background. So there are 60
  outputs and no void pixels.

Splits: ``train`` and ``val``, VOC2010 ``ImageSets/Main/{train,val}.txt``
(4998 and 5105 images).

Run ``python -m fcn_jax.prepare_data --dataset pascal_context
--manual_dir DIR``.
"""

from __future__ import annotations

import re
from typing import Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax.datasets import archives
from fcn_jax.datasets import common
from fcn_jax.datasets import manual

VOC_ARCHIVE = "VOCtrainval_03-May-2010.tar"
VOC_URL = ("http://host.robots.ox.ac.uk/pascal/VOC/voc2010/"
           "VOCtrainval_03-May-2010.tar")
VOC_ROOT = "VOCdevkit/VOC2010"
CONTEXT_ARCHIVE = "trainval.tar.gz"
CONTEXT_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"
# The Context release's list of its raw labels, next to trainval/.
LABELS_FILE = "labels.txt"

NUM_TASK_CLASSES = 59
NUM_CLASSES = NUM_TASK_CLASSES + 1  # With background (0).
# The image features, stored encoded; read them with
# ``decoders=common.skip_decoding_decoders(ENCODED_FEATURES)``.
ENCODED_FEATURES = (common.IMAGE, common.MASK)
SPLIT_SIZES = {"train": 4998, "val": 5105}

CLASSES_FILE = manual.SPLITS_DIR / "pascalcontext_classes-59.txt"
# A copy of the Context release's labels.txt (the reference's
# classes-400.txt), used when manual_dir has none.
RAW_LABELS_FILE = manual.SPLITS_DIR / "pascalcontext_classes-400.txt"
# 59-class name -> the name of the same label in labels.txt.
RENAMES = {"diningtable": "table", "bedcloth": "bedclothes",
           "clothes": "cloth"}

MANUAL_LAYOUT = f"""\
  <manual_dir>/
    {VOC_ARCHIVE}   or its extracted {VOC_ROOT}/
                                  (JPEGImages/,
                                  ImageSets/Main/{{train,val}}.txt)
    {CONTEXT_ARCHIVE}               or its extracted folder (here or up to
                                  two levels down): trainval/<id>.mat
                                  (field `LabelMap`) and {LABELS_FILE}"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the VOC2010 images and the PASCAL-Context annotations and put them
(or their extracted folders) in manual_dir:
  {VOC_ARCHIVE}  from {VOC_URL}
  {CONTEXT_ARCHIVE}              from {CONTEXT_URL}
Layout:
{MANUAL_LAYOUT}
Then run:
  python -m fcn_jax.prepare_data --dataset pascal_context \\
      --manual_dir <manual_dir>
"""

_CITATION = """\
@inproceedings{mottaghi2014role,
  title={The Role of Context for Object Detection and Semantic Segmentation
         in the Wild},
  author={Mottaghi, Roozbeh and Chen, Xianjie and Liu, Xiaobai and Cho,
          Nam-Gyu and Lee, Seong-Whan and Fidler, Sanja and Urtasun, Raquel
          and Yuille, Alan},
  booktitle={CVPR}, year={2014}}
"""

VOC_SOURCE = archives.Source(
    name=f"PASCAL VOC 2010 ({VOC_ARCHIVE})", archives=(VOC_ARCHIVE,),
    url=VOC_URL, marker=f"{VOC_ROOT}/JPEGImages",
    member_pattern=re.compile(
        r"(^|/)VOC2010/(JPEGImages/[\w\-]+\.jpg|"
        r"ImageSets/Main/(train|val)\.txt)$"))
CONTEXT_SOURCE = archives.Source(
    name=f"PASCAL-Context annotations ({CONTEXT_ARCHIVE})",
    archives=(CONTEXT_ARCHIVE,), url=CONTEXT_URL, marker="trainval",
    member_pattern=re.compile(r"(^|/)(trainval/[\w\-]+\.mat|labels\.txt)$"))


def parse_label_list(text: str, where: str) -> list[tuple[int, str]]:
  """Reads ``<index>: <name>`` lines (as the Context and reference lists)."""
  entries = []
  for line in text.splitlines():
    if not line.strip():
      continue
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(.+?)\s*", line)
    if not match:
      raise errors.UserError(
          f"{where}: cannot read the line {line!r}; expected "
          "'<index>: <name>'.")
    entries.append((int(match.group(1)), match.group(2)))
  return entries


def read_class_names(path: epath.Path = CLASSES_FILE) -> list[str]:
  """The 60 output names: background, then the 59 classes in output order."""
  entries = parse_label_list(path.read_text(), str(path))
  if [index for index, _ in entries] != list(range(NUM_CLASSES)):
    raise errors.UserError(
        f"{path} does not list indices 0..{NUM_TASK_CLASSES} in order.")
  return [name for _, name in entries]


def label_lookup(raw_labels: Sequence[tuple[int, str]],
                 task_names: Sequence[str], where: str) -> np.ndarray:
  """The table from raw label index to output index (docs/reference.md §8.4).

  Args:
    raw_labels: ``(index, name)`` of every raw label (``labels.txt``).
    task_names: The 59 class names in output order (without background).
    where: The raw label list's file, named in errors.

  Returns:
    ``uint8 [max raw index + 1]``: entry ``r`` is ``k + 1`` if raw label
    ``r`` is the ``k``-th task class, else 0 (background).

  Raises:
    ValueError: A task class is not in the raw list, or a name is there
      twice.
  """
  by_name: dict[str, int] = {}
  for index, name in raw_labels:
    key = name.replace(" ", "")
    if key in by_name:
      raise errors.UserError(f"{where} names {name!r} twice.")
    by_name[key] = index
  lookup = np.zeros(max(index for index, _ in raw_labels) + 1, np.uint8)
  for k, name in enumerate(task_names):
    key = RENAMES.get(name, name).replace(" ", "")
    if key not in by_name:
      raise errors.UserError(
          f"{where} has no label {key!r} (class {k + 1} of the 59); is it "
          "the PASCAL-Context labels.txt?")
    lookup[by_name[key]] = k + 1
  return lookup


def make_example(voc_tree: archives.FileTree,
                 context_tree: archives.FileTree, image_id: str, split: str,
                 lookup: np.ndarray, raw_values: Sequence[int]) -> dict:
  """Reads, checks and converts the image and the labels of one id.

  Raises:
    archives.MissingDataError: A file is missing.
    common.InvalidExampleError: A corrupt image, sizes that differ, or a raw
      label that the label list does not have.
  """
  image_path = f"JPEGImages/{image_id}.jpg"
  label_path = f"trainval/{image_id}.mat"
  archives.require_files(voc_tree, [image_path], image_id, split)
  archives.require_files(context_tree, [label_path], image_id, split)
  jpeg = voc_tree.read_bytes(image_path)
  width, height = common.load_image(jpeg, image_id,
                                    voc_tree.describe(image_path)).size
  where = context_tree.describe(label_path)
  labels = common.read_mat_labels(context_tree.read_bytes(label_path),
                                  "LabelMap", image_id, where)
  common.check_same_size(height, width, labels.shape, image_id, where)
  common.check_label_values(labels, raw_values, image_id, where,
                            f"the {LABELS_FILE} indices (or 0)")
  return {
      common.IMAGE: jpeg,
      common.MASK: common.encode_mask_png(lookup[labels]),
      common.IMAGE_ID: image_id,
      common.HEIGHT: height,
      common.WIDTH: width,
  }


class PascalContext(manual.ManualBuilder):
  """PASCAL-Context, 59 classes + background (the FCN paper's)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "VOC2010 train and val, 59-class task."}
  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  MANUAL_LAYOUT = MANUAL_LAYOUT
  SPLIT_SIZES = SPLIT_SIZES

  def _info(self) -> tfds.core.DatasetInfo:
    return common.LocalDatasetInfo(
        builder=self,
        description=(
            "PASCAL-Context: full-scene labels of PASCAL VOC 2010, mapped to "
            "the 59-class task as the FCN reference does; 0 = background "
            "(every other label), 1..59 = the classes, 60 outputs. Splits "
            "train (4998) and val (5105), the VOC2010 Main lists."),
        features=tfds.features.FeaturesDict({
            common.IMAGE: common.image_feature("jpeg"),
            common.MASK: common.mask_feature(
                "class indices 0..59, 0 = background"),
            common.IMAGE_ID: tfds.features.Text(),
            common.HEIGHT: tfds.features.Scalar(np.int32),
            common.WIDTH: tfds.features.Scalar(np.int32),
        }),
        homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=common.class_metadata(NUM_CLASSES, read_class_names()),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    voc_tree = archives.SubTree(self._open(dl_manager, VOC_SOURCE, "voc"),
                                VOC_ROOT + "/")
    context_tree = self._open(dl_manager, CONTEXT_SOURCE, "context")
    if context_tree.exists(LABELS_FILE):
      labels_where = context_tree.describe(LABELS_FILE)
      labels_text = context_tree.read_bytes(LABELS_FILE).decode()
    else:
      logging.info("No %s next to trainval/; using the copy in %s.",
                   LABELS_FILE, RAW_LABELS_FILE)
      labels_where = str(RAW_LABELS_FILE)
      labels_text = RAW_LABELS_FILE.read_text()
    raw_labels = parse_label_list(labels_text, labels_where)
    lookup = label_lookup(raw_labels, read_class_names()[1:], labels_where)
    raw_values = [0] + [index for index, _ in raw_labels]
    list_files = {split: voc_tree.describe(f"ImageSets/Main/{split}.txt")
                  for split in SPLIT_SIZES}
    ids = {}
    for split in SPLIT_SIZES:
      path = f"ImageSets/Main/{split}.txt"
      if not voc_tree.exists(path):
        raise archives.MissingDataError(
            f"Missing {voc_tree.describe(path)}; the VOC2010 release is "
            f"incomplete: download {VOC_ARCHIVE} again from {VOC_URL}.")
      ids[split] = manual.parse_id_list(voc_tree.read_bytes(path).decode(),
                                        list_files[split])
    self._check_sizes(ids, list_files)
    return {split: self._generate_examples(split, split_ids, voc_tree,
                                           context_tree, lookup, raw_values)
            for split, split_ids in ids.items()}

  def _generate_examples(self, split: str, image_ids: list[str],
                         voc_tree: archives.FileTree,
                         context_tree: archives.FileTree, lookup: np.ndarray,
                         raw_values: Sequence[int]
                         ) -> Iterator[tuple[str, dict]]:
    return self._checked_examples(
        split, image_ids,
        lambda image_id: make_example(voc_tree, context_tree, image_id, split,
                                      lookup, raw_values))
