"""SYNTHETIC procedural segmentation data (``synthetic_shapes``), no download.

Random ellipses, rectangles and triangles of the 20 VOC object classes on a
textured background (class 0), some with a void (255) outline like VOC's,
written with exactly the features of ``voc_seg`` so the quickstart and the
tests run the real pipeline without the VOC archives. Numbers measured on it
say nothing about PASCAL VOC: its description, its split names
(``synthetic_train``, ``synthetic_val``), its ids (``synthetic_...``), its
``label_source`` feature and its ``synthetic`` metadata flag all say so.

Configs: ``small`` (default; 256 train / 64 val images of 64..128 px) and
``tiny`` (16 / 10 images of 32..48 px). Tests and benchmarks may pass their
own :class:`SyntheticShapesConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from etils import epath
import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from fcn_jax import voc
from fcn_jax.datasets import common

TRAIN_SPLIT = "synthetic_train"
VAL_SPLIT = "synthetic_val"
LABEL_SOURCE = "synthetic"


@dataclasses.dataclass
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Sizes of a synthetic_shapes variant.

  Attributes:
    num_train: Images in ``synthetic_train``.
    num_val: Images in ``synthetic_val``.
    min_size: Smallest height/width in pixels.
    max_size: Largest height/width in pixels.
    max_shapes: At most this many objects per image (at least one).
    seed: Everything drawn is a function of this seed.
    jpeg_quality: JPEG quality of the stored images.
  """

  num_train: int = 256
  num_val: int = 64
  min_size: int = 64
  max_size: int = 128
  max_shapes: int = 4
  seed: int = 0
  jpeg_quality: int = 90


def render_example(rng: np.random.Generator, height: int, width: int,
                   max_shapes: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Draws one image and its mask.

  Each object class has its VOC palette colour; objects are filled with it
  plus noise over a noisy grey-brown background, so a small network can learn
  the classes from colour.

  Args:
    rng: Source of randomness.
    height: Image height.
    width: Image width.
    max_shapes: At most this many objects (at least one).

  Returns:
    ``(image uint8 [H, W, 3], mask uint8 [H, W])``.
  """
  mask_image = Image.new("L", (width, height), 0)
  draw = ImageDraw.Draw(mask_image)
  for _ in range(int(rng.integers(1, max_shapes + 1))):
    label = int(rng.integers(1, common.NUM_CLASSES))
    x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
    y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
    x1, y1 = max(x1, x0 + width // 6), max(y1, y0 + height // 6)
    outline = voc.IGNORE_LABEL if rng.random() < 0.5 else None
    kind = rng.integers(3)
    if kind == 0:
      draw.ellipse((x0, y0, x1, y1), fill=label, outline=outline)
    elif kind == 1:
      draw.rectangle((x0, y0, x1, y1), fill=label, outline=outline)
    else:
      draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=label,
                   outline=outline)
  mask = np.asarray(mask_image, np.uint8)
  colors = voc.voc_colormap().astype(np.float32)
  colors[0] = (110, 100, 90)  # Background: not black, not a class colour.
  colors[voc.IGNORE_LABEL] = colors[0]
  noise = rng.normal(0.0, 12.0, size=(height, width, 3)).astype(np.float32)
  image = np.clip(np.rint(colors[mask] + noise), 0, 255).astype(np.uint8)
  return image, mask


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
  """SYNTHETIC shapes in the voc_seg features (no download, not VOC)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # TFDS finds this file through `importlib_resources`, which it does not
  # declare as a dependency; naming it here avoids that import.
  code_path = epath.Path(__file__)
  BUILDER_CONFIGS = [
      SyntheticShapesConfig(name="small",
                            description="256/64 images, 64..128 px"),
      SyntheticShapesConfig(name="tiny", description="16/10 images, 32..48 px",
                            num_train=16, num_val=10, min_size=32,
                            max_size=48),
  ]
  DEFAULT_CONFIG_NAME = "small"

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.LocalDatasetInfo(
        builder=self,
        description=("SYNTHETIC data, not PASCAL VOC: random shapes of the 20 "
                     "VOC classes on a textured background, in the voc_seg "
                     "features, for quickstarts and tests. Scores on it mean "
                     "nothing for VOC."),
        features=common.segmentation_features(),
        disable_shuffling=True,
        metadata=common.class_metadata(common.NUM_CLASSES, voc.VOC_CLASSES,
                                       synthetic=True),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        TRAIN_SPLIT: self._generate_examples(TRAIN_SPLIT, 0, config.num_train),
        VAL_SPLIT: self._generate_examples(VAL_SPLIT, 1, config.num_val),
    }

  def _generate_examples(self, split: str, split_index: int, count: int
                         ) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    for index in range(count):
      rng = np.random.default_rng((config.seed, split_index, index))
      height, width = rng.integers(config.min_size, config.max_size + 1,
                                   size=2).tolist()
      image, mask = render_example(rng, height, width, config.max_shapes)
      image_id = f"{split}_{index:06d}"
      yield image_id, common.make_example(
          image_id, common.encode_jpeg(image, config.jpeg_quality), mask,
          LABEL_SOURCE, mask_where=f"{image_id} (generated)")
