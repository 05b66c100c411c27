"""Image preprocessing that travels with a set of weights.

Every pretrained trunk expects its inputs prepared in one exact way: Caffe's
VGG16 wants BGR values in 0-255 minus a per-channel mean, torchvision's wants
RGB scaled to 0-1 and standardised. Getting this wrong costs several mean IU
points without any error, so the choice is a value (:class:`Preprocessing`)
that is stored in checkpoint metadata and read back by training, evaluation
and prediction; :func:`resolve` refuses a setting that contradicts the one the
weights record.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from PIL import Image

from fcn_jax import errors

# The FCN data layers subtract this mean from BGR images (docs/reference.md
# §8.1).
CAFFE_VGG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How uint8 RGB pixels become network inputs.

  ``output = ((image[..., order] * scale) - mean) / std`` where ``order`` is
  the channel order (the image is always decoded as RGB), and ``mean`` and
  ``std`` are given in that channel order.

  Attributes:
    channel_order: ``"BGR"`` or ``"RGB"``.
    mean: Per-channel mean, in ``channel_order``, on the scaled values.
    scale: Multiplier applied to the 0-255 values before the mean.
    std: Per-channel divisor, in ``channel_order``.
    name: A short label for logs and metadata.
  """

  channel_order: str
  mean: tuple[float, float, float]
  scale: float = 1.0
  std: tuple[float, float, float] = (1.0, 1.0, 1.0)
  name: str = "custom"

  def __post_init__(self):
    if self.channel_order not in ("RGB", "BGR"):
      raise ValueError(
          f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}.")
    if len(self.mean) != 3 or len(self.std) != 3:
      raise ValueError("mean and std must have 3 values each.")
    if any(s == 0 for s in self.std):
      raise ValueError("std values must be non-zero.")

  def __call__(self, image: np.ndarray | Image.Image,
               out: np.ndarray | None = None) -> np.ndarray:
    """Turns uint8 RGB images ``[..., H, W, 3]`` into float32 network inputs.

    The float32 operations of the class formula, in its order; multiplying
    and dividing by one are skipped (they are exact). This is the input
    pipeline's most expensive step, so it runs on whole pixel rows (one
    contiguous vector each, several times faster than 3-value pixels) and
    can write straight into a batch canvas.

    Args:
      image: RGB values 0-255, ``[..., H, W, 3]`` (an array or a PIL image).
      out: Where to write the result: float32, the shape of ``image``, e.g.
        the top-left corner of a batch canvas. Default: a new array.

    Returns:
      ``out``, or the new array.

    Raises:
      ValueError: ``image`` is not ``[..., 3]`` or ``out`` does not match it.
    """
    pixels = self._in_channel_order(image)
    if pixels.shape[-1:] != (3,):
      raise ValueError(
          f"expected RGB images [..., 3], got shape {pixels.shape}")
    if out is None:
      out = np.empty(pixels.shape, np.float32)
    if out.shape != pixels.shape or out.dtype != np.float32:
      raise ValueError(f"out must be float32 {pixels.shape}, got {out.dtype} "
                       f"{out.shape}.")
    if not pixels.size:
      return out
    width = pixels.shape[-2] if pixels.ndim > 1 else 1
    rows_in = np.ascontiguousarray(pixels).reshape(-1, width * 3)
    rows_out = _pixel_rows(out)
    result = (np.empty(rows_in.shape, np.float32) if rows_out is None
              else rows_out)
    mean = np.tile(np.asarray(self.mean, np.float32), width)
    if self.scale == 1.0:
      np.subtract(rows_in, mean, out=result, dtype=np.float32)
    else:
      np.multiply(rows_in, np.float32(self.scale), out=result,
                  dtype=np.float32)
      result -= mean
    if any(s != 1.0 for s in self.std):
      result /= np.tile(np.asarray(self.std, np.float32), width)
    if rows_out is None:
      out[...] = result.reshape(out.shape)
    return out

  def _in_channel_order(self, image: np.ndarray | Image.Image) -> np.ndarray:
    """The pixels of an RGB image as an array in ``channel_order``.

    PIL reverses the channels of an 8-bit image several times faster than
    NumPy does.
    """
    if (isinstance(image, Image.Image) and image.mode == "RGB"
        and self.channel_order == "BGR"):
      return np.asarray(Image.merge("RGB", image.split()[::-1]))
    pixels = np.asarray(image)
    if self.channel_order == "RGB":
      return pixels
    if (pixels.dtype == np.uint8 and pixels.ndim == 3
        and pixels.shape[-1] == 3 and pixels.size):
      return self._in_channel_order(Image.fromarray(pixels))
    return pixels[..., ::-1]

  def invert(self, inputs: np.ndarray) -> np.ndarray:
    """Maps network inputs back to uint8 RGB (for visualisation)."""
    x = np.asarray(inputs, np.float32) * np.asarray(self.std, np.float32)
    x = (x + np.asarray(self.mean, np.float32)) / np.float32(self.scale)
    if self.channel_order == "BGR":
      x = x[..., ::-1]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable form for checkpoint metadata."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
    return cls(channel_order=d["channel_order"], mean=tuple(d["mean"]),
               scale=float(d.get("scale", 1.0)),
               std=tuple(d.get("std", (1.0, 1.0, 1.0))),
               name=d.get("name", "custom"))

  def matches(self, other: "Preprocessing") -> bool:
    """Whether two preprocessings give the same inputs (ignoring the name)."""
    return (self.channel_order == other.channel_order
            and np.allclose(self.mean, other.mean, rtol=0, atol=1e-4)
            and np.isclose(self.scale, other.scale)
            and np.allclose(self.std, other.std, rtol=0, atol=1e-6))


# Caffe VGG16 and the released FCN models; Keras' VGG16 uses the same.
CAFFE_VGG = Preprocessing("BGR", CAFFE_VGG_MEAN_BGR, 1.0, (1.0, 1.0, 1.0),
                          name="caffe_vgg")
# torchvision's ImageNet models.
TORCHVISION = Preprocessing("RGB", IMAGENET_MEAN_RGB, 1.0 / 255.0,
                            IMAGENET_STD_RGB, name="torchvision")

# The colour inputs of the other families' data layers (docs/reference.md
# §8.2-§8.4): BGR minus their own means.
NYUD = Preprocessing("BGR", (116.190, 97.203, 92.318), name="nyud")
SIFT_FLOW = Preprocessing("BGR", (114.578, 115.294, 108.353),
                          name="sift_flow")
PASCAL_CONTEXT = Preprocessing("BGR", (104.007, 116.669, 122.679),
                               name="pascal_context")

PRESETS: dict[str, Preprocessing] = {
    "caffe_vgg": CAFFE_VGG,
    "keras_vgg": dataclasses.replace(CAFFE_VGG, name="keras_vgg"),
    "torchvision": TORCHVISION,
    "nyud": NYUD,
    "sift_flow": SIFT_FLOW,
    "pascal_context": PASCAL_CONTEXT,
}


# --------------------------------------------------------------------------
# NYUD's other inputs, HHA and depth (fixed by the reference's data layer).
# --------------------------------------------------------------------------

# HHA, channels in file order (no reversal) minus their means (§8.2).
NYUD_HHA = Preprocessing("RGB", (132.431, 94.076, 118.477), name="nyud_hha")


@dataclasses.dataclass(frozen=True)
class LogDepth:
  """NYUD's depth input: ``log(depth) - mean``, one channel (§8.2).

  Attributes:
    mean: Subtracted after the natural logarithm (7.844).
    name: A short label.
  """
  mean: float = 7.844
  name: str = "nyud_log_depth"

  def __call__(self, depth: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` raw depth (e.g. uint16 PNG values) -> float32
    ``[..., H, W, 1]``.

    Raises:
      errors.UserError: A value <= 0, whose logarithm is not finite.
    """
    depth = np.asarray(depth)
    if depth.ndim >= 3 and depth.shape[-1] == 1:
      depth = depth[..., 0]
    if depth.size and depth.min() <= 0:
      raise errors.UserError(
          f"depth has values <= 0 (min {depth.min()}); the reference feeds "
          "log(depth), so every pixel needs a positive depth (fill holes "
          "first, as NYUDv2's in-painted depth maps are)")
    x = np.log(depth.astype(np.float32)) - np.float32(self.mean)
    return x[..., None]


NYUD_LOG_DEPTH = LogDepth()
# How each dataset feature other than the colour image becomes input
# channels (the colour image uses the weights' Preprocessing).
SOURCE_PREPROCESSING = {"hha": NYUD_HHA, "depth": NYUD_LOG_DEPTH}


def source_preprocessing_metadata(features: Sequence[str]
                                  ) -> dict[str, dict[str, Any]]:
  """What checkpoint metadata records of the non-colour features a net reads
  (``{'hha': {...}, 'depth': {'mean': 7.844, ...}}``; empty for colour
  only)."""
  return {f: dataclasses.asdict(SOURCE_PREPROCESSING[f])
          for f in dict.fromkeys(features) if f in SOURCE_PREPROCESSING}


def check_source_preprocessing(recorded: Mapping[str, Any] | None,
                               where: str) -> None:
  """Refuses weights that record another HHA/depth preparation than the one
  fcn_jax applies (:data:`SOURCE_PREPROCESSING`).

  Raises:
    errors.UserError: Naming the feature, both preparations and the weights.
  """
  for feature, values in (recorded or {}).items():
    current = SOURCE_PREPROCESSING.get(feature)
    if current is None:
      raise errors.UserError(
          f"{where} records a preprocessing for the input feature "
          f"{feature!r}, which fcn_jax does not know (known: "
          f"{sorted(SOURCE_PREPROCESSING)}); train or convert them with this "
          "version of fcn_jax")
    if isinstance(current, Preprocessing):
      same = current.matches(Preprocessing.from_dict(values))
    else:
      same = np.isclose(float(values.get("mean", np.nan)), current.mean)
    if not same:
      raise errors.UserError(
          f"{where} was trained with {feature} prepared as {dict(values)}, "
          f"but fcn_jax prepares it as {dataclasses.asdict(current)} "
          "(docs/reference.md §8.2): its inputs would be wrong.")


def prepare_inputs(sources: Mapping[str, np.ndarray],
                   input_sources: Mapping[str, Sequence[str]],
                   color: Preprocessing) -> dict[str, np.ndarray]:
  """A model's inputs from an example's raw arrays.

  Args:
    sources: The example's features by name: ``image`` (uint8 RGB), ``hha``
      (uint8, file order), ``depth`` (raw values ``[H, W]``).
    input_sources: ``ModelSpec.input_sources``: for each model input, the
      features concatenated along channels.
    color: How the colour ``image`` is prepared (the weights' preset).

  Returns:
    ``{input name: float32 [H, W, C]}``.

  Raises:
    errors.UserError: A feature is missing or cannot be prepared.
  """
  inputs = {}
  for name, features in input_sources.items():
    parts = []
    for feature in features:
      if feature not in sources:
        raise errors.UserError(
            f"input {name!r} needs the {feature!r} image, which was not "
            f"given (given: {sorted(sources)})")
      prepare = color if feature == "image" else SOURCE_PREPROCESSING[feature]
      parts.append(prepare(sources[feature]))
    sizes = {p.shape[:-1] for p in parts}
    if len(sizes) > 1:
      raise errors.UserError(
          f"input {name!r}: {' and '.join(features)} differ in size: "
          f"{sorted(sizes)}; give images of one size for each example")
    inputs[name] = np.concatenate(parts, axis=-1) if len(parts) > 1 \
        else parts[0]
  return inputs


def get_preprocessing(name: str) -> Preprocessing:
  """Returns a named preset (``caffe_vgg``, ``keras_vgg``, ``torchvision``)."""
  try:
    return PRESETS[name]
  except KeyError:
    raise errors.UserError(
        f"unknown preprocessing {name!r} (config.preprocessing, or "
        f"--preprocessing); choose one of {sorted(PRESETS)}."
    ) from None


def _pixel_rows(array: np.ndarray) -> np.ndarray | None:
  """A view of ``[..., W, 3]`` as pixel rows ``[rows, W * 3]``, if one exists.

  One exists for C-contiguous arrays and for ``[H, W, 3]`` windows of them
  (such as the top-left corner of a canvas), whose pixels are contiguous
  within each row.
  """
  width = array.shape[-2] if array.ndim > 1 else 1
  if array.flags.c_contiguous:
    return array.reshape(-1, width * 3)
  if array.ndim == 3 and array.strides[1:] == (3 * array.itemsize,
                                               array.itemsize):
    return np.lib.stride_tricks.as_strided(
        array, (array.shape[0], width * 3), (array.strides[0], array.itemsize))
  return None


def describe(p: Preprocessing) -> str:
  """A one-line description for messages."""
  return (f"{p.name}: {p.channel_order}, x{p.scale:g}, mean "
          f"{tuple(round(m, 5) for m in p.mean)}, std "
          f"{tuple(round(s, 5) for s in p.std)}")


def resolve(requested: str | Preprocessing | None,
            recorded: Mapping[str, Any] | Preprocessing | None,
            force: bool = False, *,
            force_flag: str = "config.force_preprocessing") -> Preprocessing:
  """The preprocessing to use: the weights', unless deliberately overridden.

  Args:
    requested: An explicit choice (a preset name such as ``caffe_vgg`` or a
      :class:`Preprocessing`), or ``None``/``""`` to follow the weights.
    recorded: The preprocessing the weights' metadata records (its dict or
      value), or None when there is none (e.g. a random init).
    force: Accept a ``requested`` that contradicts the weights.
    force_flag: The setting that passes ``force``, named in the error.

  Returns:
    The weights' preprocessing when nothing is requested (``CAFFE_VGG`` when
    there is no record either), else the requested one.

  Raises:
    errors.UserError: ``requested`` contradicts the weights and ``force`` is
      False.
  """
  if recorded is not None and not isinstance(recorded, Preprocessing):
    recorded = Preprocessing.from_dict(recorded) if recorded else None
  if requested is None or requested == "":
    return recorded or CAFFE_VGG
  chosen = (requested if isinstance(requested, Preprocessing)
            else get_preprocessing(requested))
  if recorded is None or chosen.matches(recorded):
    return chosen
  if force:
    logging.warning("Using preprocessing %s although the weights expect %s "
                    "(forced).", describe(chosen), describe(recorded))
    return chosen
  raise errors.UserError(
      f"preprocessing {describe(chosen)} contradicts the weights, which "
      f"expect {describe(recorded)}. Mismatched preprocessing silently costs "
      f"several mean IU. Leave the preprocessing unset to use the weights', or "
      f"set {force_flag}=True to override.")
