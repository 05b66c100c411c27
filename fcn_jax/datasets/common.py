"""Features, decoding and validation shared by the segmentation builders.

The builders (:mod:`fcn_jax.datasets.voc_seg`,
:mod:`fcn_jax.datasets.synthetic_shapes` and :mod:`fcn_jax.datasets.folder`)
write the same features, so the input pipeline reads each one the same way:

* ``image``: the JPEG bytes (for VOC and SBD, the original file, byte for
  byte, so decoding gives exactly the pixels Caffe's ``voc_layers.py`` saw;
  for a folder dataset the user's JPEG or PNG file, unchanged);
* ``segmentation_mask``: class indices (``0..20`` for VOC) with ``255`` for
  void,
  stored as a single-channel (mode ``L``) PNG, so it is lossless and decodes
  to the indices directly (no palette involved);
* ``image_id``, ``height``, ``width``;
* ``label_source``: where the mask came from (``voc2012``, ``sbd``,
  ``synthetic`` or ``folder``).

The builders of the paper's other datasets (``nyud``, ``sift_flow``,
``pascal_context``) use the same keys where they mean the same thing and add
``hha`` (an RGB PNG), ``depth`` (a 16-bit greyscale PNG of the raw values,
:func:`decode_depth`), ``semantic_mask`` and ``geometric_mask`` (masks like
``segmentation_mask``).

Images are encoded and decoded with PIL here, never with TensorFlow: TFDS
only needs TensorFlow to encode NumPy images, so the builders hand it bytes.
"""

from __future__ import annotations

import io
from typing import Any, Collection, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fcn_jax import errors
from fcn_jax import voc

NUM_CLASSES = len(voc.VOC_CLASSES)


# Feature keys.
IMAGE = "image"
MASK = "segmentation_mask"
IMAGE_ID = "image_id"
HEIGHT = "height"
WIDTH = "width"
LABEL_SOURCE = "label_source"
HHA = "hha"
DEPTH = "depth"
SEMANTIC_MASK = "semantic_mask"
GEOMETRIC_MASK = "geometric_mask"


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """The DatasetInfo of every fcn_jax builder: data built from local files.

  TFDS looks for the info of a builder whose data is not built yet on its
  GCS bucket, in a ``/tmp/tmp*tfds`` folder that it makes first and never
  removes (one per command that opens such a builder). None of these
  datasets is on that bucket: there is nothing to look up.
  """

  def initialize_from_bucket(self) -> None:
    return None


class InvalidExampleError(errors.UserError):
  """An image or mask that cannot be used as it is; the message names the id."""


def segmentation_features(num_classes: int = NUM_CLASSES,
                          image_format: str | None = "jpeg"
                          ) -> tfds.features.FeaturesDict:
  """The feature spec the builders write.

  Args:
    num_classes: Named in the mask's documentation.
    image_format: The images' encoding; ``None`` when the builder stores
      image files of several formats (JPEG and PNG) unchanged.
  """
  return tfds.features.FeaturesDict({
      IMAGE: image_feature(image_format),
      MASK: mask_feature(f"class indices 0..{num_classes - 1}, "
                         f"{voc.IGNORE_LABEL} = void"),
      IMAGE_ID: tfds.features.Text(),
      HEIGHT: tfds.features.Scalar(np.int32),
      WIDTH: tfds.features.Scalar(np.int32),
      LABEL_SOURCE: tfds.features.Text(),
  })


def class_metadata(num_classes: int, class_names: Sequence[str], *,
                   synthetic: bool = False, **extra: Any
                   ) -> tfds.core.MetadataDict:
  """The ``info.metadata`` every fcn_jax builder records: the class count
  and names (read by :func:`fcn_jax.data.data_sources.dataset_class_names`), the
  void label, whether the data is synthetic, and ``extra`` fields."""
  return tfds.core.MetadataDict(
      synthetic=synthetic, num_classes=num_classes,
      class_names=list(class_names), ignore_label=voc.IGNORE_LABEL, **extra)


def image_feature(encoding_format: str) -> tfds.features.Image:
  """An RGB image stored as the original file's bytes (JPEG or PNG)."""
  return tfds.features.Image(shape=(None, None, 3),
                             encoding_format=encoding_format)


def mask_feature(doc: str) -> tfds.features.Image:
  """A mask of class indices stored as a greyscale PNG (lossless)."""
  return tfds.features.Image(shape=(None, None, 1), encoding_format="png",
                             doc=doc)


def skip_decoding_decoders(keys: Sequence[str] = (IMAGE, MASK)
                           ) -> dict[str, Any]:
  """TFDS decoders that leave the image features ``keys`` as bytes.

  The input pipeline decodes them itself with :func:`decode_image`,
  :func:`decode_mask` and :func:`decode_depth`, so the pixels do not depend
  on whether OpenCV happens to be installed (TFDS prefers it when it is).
  """
  return {key: tfds.decode.SkipDecoding() for key in keys}


def open_image(data: bytes) -> Image.Image:
  """Opens JPEG/PNG bytes as an RGB PIL image."""
  image = Image.open(io.BytesIO(data))
  return image if image.mode == "RGB" else image.convert("RGB")


def open_mask(data: bytes) -> Image.Image:
  """Opens a stored ``segmentation_mask`` PNG (class indices, mode ``L``)."""
  mask = Image.open(io.BytesIO(data))
  if mask.mode not in ("L", "P"):
    raise InvalidExampleError(
        f"segmentation mask has PIL mode {mask.mode!r}; expected 'L' "
        "(class indices)")
  return mask


def decode_image(data: bytes) -> np.ndarray:
  """Decodes JPEG/PNG bytes to ``uint8 [H, W, 3]`` RGB with PIL."""
  return np.asarray(open_image(data), dtype=np.uint8)


def decode_mask(data: bytes) -> np.ndarray:
  """Decodes a stored ``segmentation_mask`` PNG to ``uint8 [H, W]`` indices."""
  return np.asarray(open_mask(data), dtype=np.uint8)


def decode_depth(data: bytes) -> np.ndarray:
  """Decodes a stored ``depth`` PNG to ``uint16 [H, W]`` raw values."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image).astype(np.uint16)


def encode_depth_png(depth: np.ndarray) -> bytes:
  """Encodes ``[H, W]`` values in ``0..65535`` as a 16-bit greyscale PNG."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(depth, np.uint16)).save(buffer, "PNG")
  return buffer.getvalue()


def load_image(data: bytes, image_id: str, where: str,
               modes: Collection[str] = ("RGB",)) -> Image.Image:
  """Decodes an image file completely and checks its PIL mode.

  Args:
    data: The file's bytes.
    image_id: Named in errors.
    where: The file, named in errors.
    modes: The PIL modes accepted (e.g. ``RGB`` for a colour image).

  Returns:
    The loaded PIL image.

  Raises:
    InvalidExampleError: Corrupt or truncated file, or another mode.
  """
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:  # PIL raises several types for corrupt files.
    raise InvalidExampleError(
        f"{image_id}: cannot decode the image {where} ({type(e).__name__}: "
        f"{e}).") from e
  if image.mode not in modes:
    raise InvalidExampleError(
        f"{image_id}: {where} has PIL mode {image.mode!r}; expected "
        f"{' or '.join(repr(m) for m in modes)}.")
  return image


def read_mat_labels(data: bytes, field: str, image_id: str,
                    where: str) -> np.ndarray:
  """Reads a 2-D integer label array from a MATLAB ``.mat`` file.

  Args:
    data: The ``.mat`` file's bytes.
    field: The variable, or ``struct.field`` (e.g. ``GTcls.Segmentation``).
    image_id: Named in errors.
    where: The file, named in errors.

  Returns:
    ``int64 [H, W]``, values unchecked.

  Raises:
    InvalidExampleError: Unreadable file, no such field, not 2-D, or
      non-integer values.
  """
  # Imported here: 0.3 s of every command's start, for the .mat builders only.
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy.io.loadmat(io.BytesIO(data), struct_as_record=False,
                           squeeze_me=True)
  except Exception as e:  # scipy raises several types for corrupt files.
    raise InvalidExampleError(
        f"{image_id}: cannot read {where} ({type(e).__name__}: {e}).") from e
  name, *attributes = field.split(".")
  value = mat.get(name)
  for attribute in attributes:
    value = getattr(value, attribute, None)
  if value is None:
    raise InvalidExampleError(
        f"{image_id}: {where} has no {field} (keys: "
        f"{sorted(k for k in mat if not k.startswith('__'))}).")
  labels = np.asarray(value)
  if not np.issubdtype(labels.dtype, np.integer):
    if (not np.issubdtype(labels.dtype, np.floating)
        or not np.all(labels == np.round(labels))):
      raise InvalidExampleError(
          f"{image_id}: {where} {field} is {labels.dtype} with non-integer "
          "values.")
  if labels.ndim != 2:
    raise InvalidExampleError(
        f"{image_id}: {where} {field} has shape {labels.shape}; expected "
        "[H, W].")
  return labels.astype(np.int64)


def check_label_values(labels: np.ndarray, allowed: Collection[int],
                       image_id: str, where: str, allowed_text: str) -> None:
  """Raises unless every value of ``labels`` is in ``allowed``.

  Args:
    labels: Integer labels as read from the file (before any mapping).
    allowed: The values the dataset defines.
    image_id: Named in the error.
    where: The file, named in the error.
    allowed_text: ``allowed`` for the message, e.g. ``{0..40}``.

  Raises:
    InvalidExampleError: With the id, the file and the offending values.
  """
  values = np.unique(labels)
  bad = values[~np.isin(values, np.asarray(sorted(allowed)))].tolist()
  if bad:
    shown = ", ".join(str(v) for v in bad[:10])
    raise InvalidExampleError(
        f"{image_id}: {where} has labels outside {allowed_text}: "
        f"{shown}{' ...' if len(bad) > 10 else ''}.")


def check_same_size(height: int, width: int, shape: Sequence[int],
                    image_id: str, where: str) -> None:
  """Raises unless ``shape[:2]`` is ``(height, width)`` (the image's)."""
  if tuple(shape[:2]) != (height, width):
    raise InvalidExampleError(
        f"{image_id}: image is {height}x{width} but {where} is "
        f"{shape[0]}x{shape[1]}.")


def decode_palette_png(data: bytes, image_id: str) -> np.ndarray:
  """Reads a VOC ``SegmentationClass`` PNG as class indices.

  VOC masks are palette (mode ``P``) PNGs whose pixel values *are* the class
  indices; the palette only colours them for viewing. Converting to RGB would
  give colours, not classes, so this reads the raw indices and refuses
  anything that is not a palette or greyscale image.

  Args:
    data: The PNG file's bytes.
    image_id: The VOC id, for error messages.

  Returns:
    ``uint8 [H, W]`` class indices.

  Raises:
    InvalidExampleError: The file is not a readable palette/greyscale PNG.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.mode not in ("P", "L"):
        raise InvalidExampleError(
            f"{image_id}: SegmentationClass PNG has PIL mode {image.mode!r}; "
            "expected a palette ('P') PNG of class indices as in the VOC "
            "devkit. Colour (RGB) masks are not accepted because mapping "
            "colours back to classes is ambiguous; use the original VOC file.")
      return np.asarray(image, dtype=np.uint8)
  except InvalidExampleError:
    raise
  except Exception as e:  # PIL raises several types for corrupt files.
    raise InvalidExampleError(
        f"{image_id}: cannot decode the SegmentationClass PNG ({e}).") from e


def check_mask_values(mask: np.ndarray, image_id: str, where: str,
                      num_classes: int = NUM_CLASSES) -> None:
  """Raises unless every value is a class index or void ``255``.

  Args:
    mask: Integer mask of any dtype (checked before any cast).
    image_id: Named in the error.
    where: The file the mask came from, named in the error.
    num_classes: Valid indices are ``0..num_classes - 1``.

  Raises:
    InvalidExampleError: With the id, the file and the offending values.
  """
  values = np.unique(np.asarray(mask))
  bad = [v for v in values.tolist()
         if not (0 <= v < num_classes or v == voc.IGNORE_LABEL)]
  if bad:
    shown = ", ".join(str(v) for v in bad[:10])
    raise InvalidExampleError(
        f"{image_id}: mask {where} has values outside {{0..{num_classes - 1}, "
        f"{voc.IGNORE_LABEL}}}: {shown}{' ...' if len(bad) > 10 else ''}.")


def encode_mask_png(mask: np.ndarray) -> bytes:
  """Encodes ``uint8 [H, W]`` class indices as a greyscale PNG (lossless)."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(mask, np.uint8)).save(buffer, "PNG")
  return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """Encodes ``uint8 [H, W, 3]`` RGB as JPEG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(
      buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def rgb_image_bytes(data: bytes) -> tuple[bytes, int, int]:
  """An image file as stored: ``(bytes, height, width)``, decoded fully.

  The image feature is declared RGB (3 channels), so an image of another
  mode (CMYK or greyscale JPEGs, RGBA or palette PNGs) is converted to RGB
  as :func:`open_image` does (alpha dropped) and encoded again in its own
  format: PNG losslessly, JPEG at quality 95 (the only re-encoding; RGB
  files are stored byte for byte). Any reader of the dataset then gets 3
  channels.
  """
  with Image.open(io.BytesIO(data)) as image:
    image.load()
    width, height = image.size
    if image.mode == "RGB":
      return data, height, width
    buffer = io.BytesIO()
    if image.format == "PNG":
      image.convert("RGB").save(buffer, "PNG")
    else:
      image.convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue(), height, width


def make_example(image_id: str, jpeg_bytes: bytes, mask: np.ndarray,
                 label_source: str, mask_where: str,
                 num_classes: int = NUM_CLASSES) -> dict[str, Any]:
  """Checks one image/mask pair and returns the feature dict to write.

  The JPEG is decoded completely (a truncated or corrupt file fails here,
  with its id), its size must equal the mask's, and the mask values must be
  valid class indices.

  Args:
    image_id: Dataset id, e.g. ``2007_000032``.
    jpeg_bytes: The image file's bytes, written unchanged if RGB (else
      converted, :func:`rgb_image_bytes`).
    mask: ``[H, W]`` integer class indices.
    label_source: ``voc2012``, ``sbd``, ``synthetic`` or ``folder``.
    mask_where: The mask's file, for error messages.
    num_classes: Valid mask values are ``0..num_classes - 1`` and 255.

  Returns:
    A dict with the :func:`segmentation_features` keys.

  Raises:
    InvalidExampleError: Corrupt image, size mismatch or bad mask values.
  """
  try:
    jpeg_bytes, height, width = rgb_image_bytes(jpeg_bytes)
  except Exception as e:  # PIL raises several types for corrupt files.
    raise InvalidExampleError(
        f"{image_id}: cannot decode the image ({type(e).__name__}: {e})."
    ) from e
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise InvalidExampleError(
        f"{image_id}: mask {mask_where} has shape {mask.shape}; expected "
        "[H, W].")
  if mask.shape != (height, width):
    raise InvalidExampleError(
        f"{image_id}: image is {height}x{width} but mask {mask_where} is "
        f"{mask.shape[0]}x{mask.shape[1]}.")
  check_mask_values(mask, image_id, mask_where, num_classes)
  return {
      IMAGE: jpeg_bytes,
      MASK: encode_mask_png(mask.astype(np.uint8)),
      IMAGE_ID: image_id,
      HEIGHT: height,
      WIDTH: width,
      LABEL_SOURCE: label_source,
  }
