"""The VGG16 FCN family (FCN-32s, FCN-16s, FCN-8s, FCN-8s at-once) in Flax linen.

A transcription of the reference Caffe nets (docs/reference.md §2-§4):

* The VGG16 trunk pads the (already preprocessed) input by 100 pixels in
  ``conv1_1`` and uses Caffe's ceil-mode 2x2 max pooling, then ``fc6`` (7x7) and
  ``fc7`` (1x1) as convolutions with inverted dropout 0.5 in training.
* Every head scores ``fc7`` with ``score_fr`` and then repeats one step per
  skip: upsample the coarse scores 2x, score a finer pool layer, crop it at its
  offset and add. A final upsampler and crop restore the input size. The heads
  differ only in their :class:`HeadSpec`, a table of layer names, kernel sizes
  and crop offsets.
* Upsamplers are ``nn.ConvTranspose`` (VALID, no bias) initialised with the
  diagonal bilinear kernel of ``surgery.upsample_filt``. They live in
  ``params`` under their Caffe names so weights map 1:1, and are frozen (Caffe
  ``lr_mult: 0``): :meth:`FCN.frozen_layers` names them for the optimizer.

Variables are keyed by the Caffe layer names (``conv1_1`` ... ``upscore8``).
Kernels are HWIO. Score layers start at zero, as Caffe's default filler does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
UPSAMPLE_MODES = ("dense", "depthwise")
DTYPES = ("float32", "bfloat16", "float16")

# (output channels, number of 3x3 convolutions) per VGG16 block; each block
# ends with a 2x2 ceil-mode max pool named pool<block>.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
FC6_KERNEL = 7
INPUT_PAD = 100
DROPOUT_RATE = 0.5
# The trunk's parameterised layers in forward order, by Caffe name.
TRUNK_LAYERS = tuple(
    [f"conv{b}_{i}" for b, (_, depth) in enumerate(VGG16_BLOCKS, 1)
     for i in range(1, depth + 1)] + ["fc6", "fc7"])


# --------------------------------------------------------------------------
# Geometry helpers.
# --------------------------------------------------------------------------


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
  """The diagonal bilinear upsampling kernel of FCN's ``surgery.interp``.

  ``filt[i, j] = (1 - |i - c| / f) * (1 - |j - c| / f)`` with
  ``f = (size + 1) // 2`` and ``c = f - 1`` for odd sizes, ``f - 0.5`` for even
  (docs/reference.md §6.2). Only the diagonal ``[:, :, k, k]`` is non-zero,
  so each channel is upsampled on its own.

  Args:
    size: Kernel height and width.
    channels: Number of input (= output) channels.

  Returns:
    A float32 array of shape ``(size, size, channels, channels)`` (HWIO).
  """
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  profile = 1.0 - np.abs(np.arange(size) - center) / factor
  filt = np.outer(profile, profile).astype(np.float32)
  kernel = np.zeros((size, size, channels, channels), np.float32)
  kernel[:, :, np.arange(channels), np.arange(channels)] = filt[..., None]
  return kernel


def depthwise_kernel(dense: np.ndarray) -> np.ndarray:
  """The ``(k, k, 1, C)`` kernel of :class:`DepthwiseConvTranspose` that
  computes the same function as a dense ``(k, k, C, C)`` upsampling kernel.

  Raises:
    ValueError: ``dense`` has a non-zero off-diagonal entry (it mixes classes,
      so it has no depthwise form).
  """
  dense = np.asarray(dense)
  channels = np.arange(dense.shape[-1])
  diagonal = dense[:, :, channels, channels]
  if np.count_nonzero(dense) != np.count_nonzero(diagonal):
    raise ValueError(
        f"a dense {dense.shape} upsampling kernel with non-zero off-diagonal "
        "entries mixes classes and has no depthwise form")
  return diagonal[:, :, None, :]


def dense_kernel(depthwise: np.ndarray) -> np.ndarray:
  """The dense ``(k, k, C, C)`` form of a ``(k, k, 1, C)`` depthwise kernel."""
  depthwise = np.asarray(depthwise)
  channels = np.arange(depthwise.shape[-1])
  dense = np.zeros(depthwise.shape[:2] + (len(channels),) * 2,
                   depthwise.dtype)
  dense[:, :, channels, channels] = depthwise[:, :, 0, :]
  return dense


def convolutionalize(fc_weight: np.ndarray, in_channels: int,
                     kernel_size: int) -> np.ndarray:
  """Turns a Caffe InnerProduct weight into the equivalent HWIO conv kernel.

  Caffe flattens a ``(C, k, k)`` input in C order, so the fc weight of shape
  ``(out, C*k*k)`` is a flattened ``(out, C, k, k)`` convolution and
  ``kernel[h, w, c, o] = fc_weight[o, c*k*k + h*k + w]``
  (docs/reference.md §4.5).

  Args:
    fc_weight: ``(out_features, in_channels * kernel_size**2)`` weight.
    in_channels: Channels of the feature map the fc layer reads.
    kernel_size: Spatial size of that feature map (7 for VGG16 fc6).

  Returns:
    The kernel, shape ``(kernel_size, kernel_size, in_channels, out)``.
  """
  fc_weight = np.asarray(fc_weight)
  out = fc_weight.shape[0]
  expected = in_channels * kernel_size * kernel_size
  if fc_weight.ndim != 2 or fc_weight.shape[1] != expected:
    raise ValueError(
        f"fc weight of shape {fc_weight.shape} cannot be convolutionalised to "
        f"a {kernel_size}x{kernel_size}x{in_channels} kernel: expected "
        f"(out, {expected}).")
  return fc_weight.reshape(out, in_channels, kernel_size,
                           kernel_size).transpose(2, 3, 1, 0)


def max_pool_ceil(x: jax.Array) -> jax.Array:
  """Caffe's 2x2 stride-2 max pooling with ceil rounding (docs/reference.md
  §4.2).

  One extra row and column of -inf at the bottom/right: for an odd height or
  width the last window hangs over the edge and covers only real pixels; for
  an even one no window reaches the extra row, so the output is that of
  padding by ``size % 2``. Padding by a constant keeps the output size
  ``floor((size + 1) / 2)`` simple for shape-polymorphic export
  (:mod:`fcn_jax.export`), where ``size % 2`` blows the symbolic shapes up.
  """
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=((0, 1), (0, 1)))


def crop_like(x: jax.Array, offset: int, height: int, width: int) -> jax.Array:
  """Caffe's Crop (axis 2): ``x[:, off:off+height, off:off+width]``."""
  if x.shape[1] < offset + height or x.shape[2] < offset + width:
    raise ValueError(
        f"cannot crop {x.shape[1]}x{x.shape[2]} at offset {offset} to "
        f"{height}x{width}")
  return x[:, offset:offset + height, offset:offset + width, :]


# --------------------------------------------------------------------------
# Head specifications: the only thing that differs between the nets.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Upsampler:
  """A Caffe ``Deconvolution(kernel, stride)`` with a fixed bilinear init."""
  name: str
  kernel: int
  stride: int


@dataclasses.dataclass(frozen=True)
class Skip:
  """One fusion step: ``upsample(score) + crop(score_layer(source), offset)``.

  Attributes:
    upsampler: The 2x upsampler applied to the coarser scores.
    source: The trunk blob the skip reads (``pool4`` or ``pool3``).
    score_layer: Name of the 1x1 scoring convolution on ``source``.
    offset: Crop offset of the scored skip in the upsampled grid (§3).
    scale: A fixed per-channel Scale constant before scoring (at-once only).
  """
  upsampler: Upsampler
  source: str
  score_layer: str
  offset: int
  scale: float | None = None

  @property
  def scale_layer(self) -> str:
    return "scale_" + self.source


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """The skip steps and the final upsample-and-crop of one FCN variant."""
  skips: tuple[Skip, ...]
  final: Upsampler
  final_offset: int


_UPSCORE2 = Upsampler("upscore2", 4, 2)
_UPSCORE_POOL4 = Upsampler("upscore_pool4", 4, 2)

HEADS: Mapping[str, HeadSpec] = {
    "fcn32s": HeadSpec(skips=(), final=Upsampler("upscore", 64, 32),
                       final_offset=19),
    "fcn16s": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5),),
        final=Upsampler("upscore16", 32, 16), final_offset=27),
    "fcn8s": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5),
               Skip(_UPSCORE_POOL4, "pool3", "score_pool3", 9)),
        final=Upsampler("upscore8", 16, 8), final_offset=31),
    "fcn8s_atonce": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5, scale=0.01),
               Skip(_UPSCORE_POOL4, "pool3", "score_pool3", 9, scale=1e-4)),
        final=Upsampler("upscore8", 16, 8), final_offset=31),
}


# --------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------


class DepthwiseConvTranspose(nn.Module):
  """A per-channel (``groups = C``) VALID transposed convolution, no bias.

  The same function as ``nn.ConvTranspose(C, (k, k), (s, s), "VALID",
  transpose_kernel=False)`` whose ``(k, k, C, C)`` kernel is zero off the
  diagonal, with only the diagonal stored: kernel ``(k, k, 1, C)`` and
  ``dense[:, :, c, c] == depthwise[:, :, 0, c]``.

  It is computed by output phase rather than as a convolution of the
  stride-dilated input (which XLA's CPU backend runs slowly when grouped):
  with the Caffe kernel ``w`` (the stored one flipped) zero-padded to ``m * s``
  taps, ``y[s*q + r] = sum_{a < m} x[q - a] * w[s*a + r]`` for every phase
  ``r < s``, i.e. ``m * m`` shifted, broadcast multiply-adds in 2-D followed by
  an interleave -- exactly ``k * k`` multiply-adds per input pixel and channel.

  Attributes:
    kernel_size: Kernel height and width ``k``.
    stride: Upsampling factor ``s``.
    kernel_init: Initialiser of the ``(k, k, 1, C)`` kernel.
    dtype: Computation dtype; the kernel is stored in float32 and the sums
      are accumulated in float32.
  """
  kernel_size: int
  stride: int
  kernel_init: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, channels),
                        jnp.float32)
    taps = -(-k // s)  # m = ceil(k / s).
    caffe = jnp.pad(kernel[::-1, ::-1, 0, :],
                    ((0, taps * s - k), (0, taps * s - k), (0, 0)))
    phases = caffe.reshape(taps, s, taps, s, channels)  # [a, r_h, b, r_w, c]
    pad = taps - 1
    padded = jnp.pad(x.astype(jnp.float32),
                     ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h, out_w = height + pad, width + pad
    y = 0.0
    for a in range(taps):
      for b in range(taps):
        shifted = padded[:, pad - a:pad - a + out_h, pad - b:pad - b + out_w]
        y = y + (shifted[:, :, None, :, None, :]
                 * phases[a, :, b, :, :][None, None, :, None, :, :])
    y = y.reshape(batch, out_h * s, out_w * s, channels)
    return y[:, :s * (height - 1) + k, :s * (width - 1) + k].astype(self.dtype)


class Scale(nn.Module):
  """Caffe's Scale layer without bias: a per-channel constant multiplier."""
  value: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.constant(self.value),
                       (x.shape[-1],), jnp.float32)
    return x * scale.astype(self.dtype)


def _conv(features: int, kernel: int, padding: int, name: str, dtype: Any,
          zero_init: bool = False) -> nn.Conv:
  """A Caffe convolution: HWIO float32 parameters, computation in ``dtype``."""
  init = {}
  if zero_init:  # Caffe's default (constant 0) filler.
    init = dict(kernel_init=nn.initializers.zeros,
                bias_init=nn.initializers.zeros)
  return nn.Conv(features, (kernel, kernel), padding=padding, name=name,
                 dtype=dtype, param_dtype=jnp.float32, **init)


class VGG16(nn.Module):
  """The VGG16 trunk through fc7, with fc6/fc7 as convolutions.

  Attributes:
    width_divisor: Divides every width (64 ... 512 and 4096); 1 is VGG16.
    dtype: Computation dtype.
    input_pad: Zero padding of ``conv1_1``. Every FCN uses 100 (so that the
      crops are valid for any input size); 1 is VGG16's own geometry, where a
      224x224 image gives a single fc7 cell (the convolutionalised classifier).
    dropout_rate: Inverted dropout after fc6 and fc7 in training.
  """
  width_divisor: int = 1
  dtype: Any = jnp.float32
  input_pad: int = INPUT_PAD
  dropout_rate: float = DROPOUT_RATE

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Returns the pool1 ... pool5 and fc7 blobs, keyed by Caffe name."""
    width = lambda channels: max(1, channels // self.width_divisor)
    blobs = {}
    for block, (channels, depth) in enumerate(VGG16_BLOCKS, start=1):
      for i in range(1, depth + 1):
        pad = self.input_pad if (block, i) == (1, 1) else 1
        x = nn.relu(_conv(width(channels), 3, pad, f"conv{block}_{i}",
                          self.dtype)(x))
      x = max_pool_ceil(x)
      blobs[f"pool{block}"] = x
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    x = dropout(nn.relu(_conv(width(FC_WIDTH), FC6_KERNEL, 0, "fc6",
                              self.dtype)(x)))
    x = dropout(nn.relu(_conv(width(FC_WIDTH), 1, 0, "fc7", self.dtype)(x)))
    blobs["fc7"] = x
    return blobs


class FCN(nn.Module):
  """A VGG16 fully convolutional network with a configurable skip head.

  The trunk's parameters sit at the top level next to the head's, so the
  variable tree is flat and keyed by Caffe layer names.

  Attributes:
    head: Which skips, upsamplers and crops to use (see :data:`HEADS`).
    num_classes: Output channels (21 for PASCAL VOC).
    width_divisor: Divides every trunk width (64 ... 512) and the fc width
      (4096); 1 is VGG16. Larger values give tiny models for tests and demos.
    dtype: Computation dtype (e.g. ``jnp.bfloat16``). Parameters stay float32
      and the logits are returned in float32.
    learn_upsampling: Train the 2x upsamplers (the CVPR variant); the final
      upsampler stays fixed.
    dropout_rate: Dropout after fc6 and fc7 in training (inverted dropout).
    upsample_mode: ``"dense"`` (default) stores each upsampler as Caffe does,
      a ``(k, k, C, C)`` kernel whose off-diagonal is zero, so parameter counts
      match docs/reference.md §10; ``"depthwise"`` stores only the diagonal
      ``(k, k, 1, C)`` (:class:`DepthwiseConvTranspose`): the same function
      for FCN's per-class kernels, ``C`` times cheaper to compute.
  """
  head: HeadSpec
  num_classes: int = 21
  width_divisor: int = 1
  dtype: Any = jnp.float32
  learn_upsampling: bool = False
  dropout_rate: float = DROPOUT_RATE
  upsample_mode: str = "dense"

  def frozen_layers(self) -> tuple[str, ...]:
    """Names of layers with Caffe ``lr_mult: 0``: fixed upsamplers and scales."""
    names = [s.scale_layer for s in self.head.skips if s.scale is not None]
    if not self.learn_upsampling:
      names += [s.upsampler.name for s in self.head.skips]
    names.append(self.head.final.name)
    return tuple(names)

  def layer_names(self) -> tuple[str, ...]:
    """The parameterised layers in forward order, as the Caffe nets list
    them."""
    names = list(TRUNK_LAYERS) + ["score_fr"]
    for skip in self.head.skips:
      names.append(skip.upsampler.name)
      if skip.scale is not None:
        names.append(skip.scale_layer)
      names.append(skip.score_layer)
    return tuple(names + [self.head.final.name])

  def reference_init(self, layer: str, shapes: Mapping[str, Sequence[int]]
                     ) -> tuple[dict[str, np.ndarray], str]:
    """How the reference starts a head layer that pretrained weights lack.

    Upsamplers get the bilinear kernel (``surgery.interp``, docs/reference.md
    §6.3), Scale layers their constant, score layers zeros (Caffe's default
    filler, §5.3).

    Args:
      layer: A head layer's name.
      shapes: Its parameter shapes, ``{"kernel": (...), ...}``.

    Returns:
      ``(leaves, note)``: float32 arrays of those shapes and how they were
      made.
    """
    upsamplers = {s.upsampler.name: s.upsampler for s in self.head.skips}
    upsamplers[self.head.final.name] = self.head.final
    if layer in upsamplers:
      dense = bilinear_kernel(upsamplers[layer].kernel, self.num_classes)
      kernel = (depthwise_kernel(dense) if self.upsample_mode == "depthwise"
                else dense)
      return {"kernel": kernel}, "bilinear"
    scales = {s.scale_layer: s.scale for s in self.head.skips
              if s.scale is not None}
    if layer in scales:
      return ({"scale": np.full(tuple(shapes["scale"]), scales[layer],
                                np.float32)}, f"constant {scales[layer]:g}")
    return ({k: np.zeros(tuple(v), np.float32) for k, v in shapes.items()},
            "zeros")

  def _upsample(self, up: Upsampler, x: jax.Array,
                blobs: dict[str, jax.Array]) -> jax.Array:
    c = self.num_classes
    dense = bilinear_kernel(up.kernel, c)
    if self.upsample_mode == "depthwise":
      y = DepthwiseConvTranspose(up.kernel, up.stride,
                                 lambda *_: jnp.asarray(depthwise_kernel(dense)),
                                 self.dtype, name=up.name)(x)
    else:
      y = nn.ConvTranspose(c, (up.kernel, up.kernel), (up.stride, up.stride),
                           padding="VALID", use_bias=False,
                           kernel_init=lambda *_: jnp.asarray(dense),
                           dtype=self.dtype, param_dtype=jnp.float32,
                           name=up.name)(x)
    blobs[up.name] = y
    return y

  def _score(self, name: str, x: jax.Array,
             blobs: dict[str, jax.Array]) -> jax.Array:
    y = _conv(self.num_classes, 1, 0, name, self.dtype, zero_init=True)(x)
    blobs[name] = y
    return y

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Scores every pixel.

    Args:
      images: Preprocessed float images ``[N, H, W, 3]`` (any H, W >= 1).
      train: Enables dropout (needs a ``'dropout'`` rng).

    Returns:
      Float32 logits ``[N, H, W, num_classes]``.
    """
    if images.ndim != 4:
      raise ValueError(f"expected NHWC images, got shape {images.shape}")
    height, width = images.shape[1:3]
    trunk = VGG16(self.width_divisor, self.dtype,
                  dropout_rate=self.dropout_rate)
    nn.share_scope(trunk, self)
    blobs = trunk(images.astype(self.dtype), train)
    score = self._score("score_fr", blobs["fc7"], blobs)
    for skip in self.head.skips:
      upscored = self._upsample(skip.upsampler, score, blobs)
      features = blobs[skip.source]
      if skip.scale is not None:
        features = Scale(skip.scale, self.dtype, name=skip.scale_layer)(features)
      cropped = crop_like(self._score(skip.score_layer, features, blobs),
                          skip.offset, upscored.shape[1], upscored.shape[2])
      blobs[skip.score_layer + "c"] = cropped
      score = upscored + cropped
    score = self._upsample(self.head.final, score, blobs)
    score = crop_like(score, self.head.final_offset, height, width)
    blobs["score"] = score
    # Every named blob, for inspection: apply(..., mutable=["intermediates"]).
    self.sow("intermediates", "blobs", blobs)
    return score.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The one description of a model.

  It is what :func:`create_model` takes, what ``config.model`` holds (the
  defaults in ``fcn_jax/default_config.py`` are this class's), what checkpoint
  metadata records (:func:`fcn_jax.checkpointing.make_metadata`) and what
  loading a checkpoint rebuilds. Every value is checked here, once.

  Attributes:
    name: The reference net (:data:`MODEL_NAMES`).
    num_classes: Output classes (21 VOC, 40 NYUD, 60 PASCAL-Context, ...).
    width_divisor: Divides every trunk width (64 ... 512) and the fc width
      (4096); 1 is VGG16. Larger values give tiny models for tests and demos.
    dtype: Computation dtype (``"float32"``, ``"bfloat16"`` or
      ``"float16"``); parameters and logits stay float32. A compute choice: it
      does not shape the parameters, so checkpoints do not record it.
    learn_upsampling: Train the 2x upsamplers (the CVPR variant); the final
      upsampler stays fixed.
    dropout_rate: Inverted dropout after fc6 and fc7, in training only.
    upsample_mode: ``"dense"`` (Caffe's ``(k, k, C, C)`` upsampler kernels)
      or ``"depthwise"`` (only their diagonal, ``(k, k, 1, C)``).
  """
  name: str = "fcn32s"
  num_classes: int = 21
  width_divisor: int = 1
  dtype: str = "float32"
  learn_upsampling: bool = False
  dropout_rate: float = DROPOUT_RATE
  upsample_mode: str = "dense"

  def __post_init__(self):
    dtype = self.dtype
    if not isinstance(dtype, str):  # A NumPy/JAX dtype or scalar type.
      try:
        dtype = jnp.dtype(dtype).name
      except TypeError:
        dtype = str(dtype)
      object.__setattr__(self, "dtype", dtype)
    checks = (
        ("name", self.name in MODEL_NAMES, f"one of {MODEL_NAMES}"),
        ("num_classes", _is_int(self.num_classes) and self.num_classes >= 1,
         "a positive integer"),
        ("width_divisor",
         _is_int(self.width_divisor) and self.width_divisor >= 1,
         "a positive integer"),
        ("dtype", dtype in DTYPES, f"one of {DTYPES}"),
        ("learn_upsampling", isinstance(self.learn_upsampling, bool),
         "True or False"),
        ("dropout_rate", isinstance(self.dropout_rate, (int, float))
         and 0.0 <= self.dropout_rate < 1.0, "in [0, 1)"),
        ("upsample_mode", self.upsample_mode in UPSAMPLE_MODES,
         f"one of {UPSAMPLE_MODES}"),
    )
    for field, ok, wanted in checks:
      if not ok:
        raise ValueError(f"config.model.{field} must be {wanted}, got "
                         f"{getattr(self, field)!r}")

  @classmethod
  def fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any], **overrides: Any
                ) -> "ModelSpec":
    """A spec from a mapping (``config.model``, metadata), checked.

    Raises:
      ValueError: An unknown field (naming it and the known ones) or a bad
        value.
    """
    values = {**dict(values), **overrides}
    unknown = sorted(set(values) - set(cls.fields()))
    if unknown:
      raise ValueError(f"unknown model option(s) {unknown}; the model options "
                       f"are {list(cls.fields())}")
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def shape_options(self) -> dict[str, Any]:
    """The options besides name and class count that differ from the defaults
    and are not compute-only: what a checkpoint must record to rebuild the
    model its parameters belong to."""
    default = ModelSpec()
    return {k: v for k, v in self.to_dict().items()
            if k not in ("name", "num_classes", "dtype")
            and v != getattr(default, k)}

  def replace(self, **changes: Any) -> "ModelSpec":
    return dataclasses.replace(self, **changes)

  def create(self) -> "FCN":
    """The unbound :class:`FCN` this spec describes."""
    return FCN(head=HEADS[self.name], num_classes=self.num_classes,
               width_divisor=self.width_divisor, dtype=jnp.dtype(self.dtype),
               learn_upsampling=self.learn_upsampling,
               dropout_rate=float(self.dropout_rate),
               upsample_mode=self.upsample_mode)


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def create_model(name: str, num_classes: int = 21, **options: Any) -> "FCN":
  """Builds one of the VOC FCNs by its reference name.

  Args:
    name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s_atonce``.
    num_classes: Output classes (21 VOC, 40 NYUD, 60 PASCAL-Context, ...).
    **options: The other :class:`ModelSpec` fields: ``width_divisor``,
      ``dtype``, ``learn_upsampling``, ``dropout_rate``, ``upsample_mode``.

  Returns:
    An unbound :class:`FCN`; ``model.init(rng, images)`` creates its variables.

  Raises:
    ValueError: An unknown option or a bad value.
  """
  return ModelSpec.from_dict(options, name=name,
                             num_classes=num_classes).create()


def init_variables(model: FCN, rng: jax.Array | None = None,
                   image_size: int = 32) -> dict[str, Any]:
  """Initialises a model's variables on a small dummy input.

  The variables do not depend on the input size, so a small one keeps start-up
  cheap. Trunk weights are Flax's default init (LeCun normal); train from
  pretrained weights (see :mod:`fcn_jax.weights`) to reproduce the paper.
  """
  rng = jax.random.key(0) if rng is None else rng
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init(rng, dummy, train=False)


def param_shapes(model: FCN) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
  """The model's parameter shapes in forward order, without allocating them."""
  shapes = jax.eval_shape(lambda: init_variables(model))["params"]
  order = {name: i for i, name in enumerate(model.layer_names())}
  return dict(sorted(shapes.items(),
                     key=lambda kv: order.get(kv[0], len(order))))


@functools.lru_cache(maxsize=None)
def model_layer_names(name: str) -> frozenset[str]:
  """The parameterised layers of a net (independent of widths and classes)."""
  return frozenset(create_model(name, width_divisor=64).layer_names())
