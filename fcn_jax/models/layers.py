"""Caffe layers that the FCN nets need, in Flax: kernels, pooling, crops, LRN.

* The diagonal bilinear upsampling kernel (``surgery.upsample_filt``) and its
  dense/depthwise forms; InnerProduct weights as convolution kernels.
* Caffe's round-up max pooling, its Crop, its across-channel LRN (CaffeNet)
  and its bias-free Scale (FCN-8s at-once).
* :class:`DepthwiseConvTranspose`, the per-class form of a diagonal
  upsampler, :func:`caffe_conv`, a Caffe convolution with float32
  parameters, :class:`PatchConv` (:func:`fc_conv`), fc6/fc7 as one
  matmul over patches on CPUs, and :class:`PaddedInputConv`
  (:func:`input_conv`), the first convolution computed only where its
  100-pixel padding lets it reach the image.
* :class:`Extent` and :func:`mask_outside`: each blob's size as a function of
  the input's, and the masks that give native-size values inside a larger,
  padded shape (``FCN(..., sizes=...)``, docs/reference.md §4.12).

Each follows docs/reference.md §4; the NumPy transcriptions in
``tests/models_test.py`` check them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# --------------------------------------------------------------------------
# Kernels.
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
    kernel_size: Spatial size of that feature map (7 for VGG16 fc6, 6 for
      CaffeNet's).

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


# --------------------------------------------------------------------------
# Pooling, crops, normalisation.
# --------------------------------------------------------------------------


def max_pool_ceil(x: jax.Array, window: int = 2, stride: int = 2
                  ) -> jax.Array:
  """Caffe's max pooling with round-up output sizes (docs/reference.md §4.2).

  ``out = ceil((in - window) / stride) + 1``. The bottom/right get
  ``stride - 1`` rows/columns of -inf, so the last window may hang over the
  edge and covers only real pixels; rows no window reaches change nothing.
  A constant pad (rather than one depending on ``in``) keeps the output size
  simple for shape-polymorphic export (:mod:`fcn_jax.export`). A side smaller
  than the window gets one window over all of it, as in Caffe.

  Non-overlapping windows of concrete shape (VGG16's 2x2 stride 2) take
  :func:`_max_pool_tiled`: the same values, and the gradient of each window
  goes to its first maximum (row-major), as in Caffe and PyTorch, without
  XLA's select-and-scatter (slow on CPUs).
  """
  shape = x.shape[1:3]
  if window == stride and all(isinstance(s, int) and s >= window
                              for s in shape):
    return _max_pool_tiled(x, window)
  pads = []
  for size in shape:
    short = isinstance(size, int) and size < window
    pads.append((0, window - size if short else stride - 1))
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=tuple(pads))


def _window_taps(x: jax.Array, window: int) -> list[jax.Array]:
  """The ``window**2`` strided views ``x[:, i::window, j::window]`` of ``x``
  padded with -inf to multiples of ``window``, in row-major tap order."""
  height, width = x.shape[1:3]
  pad_h, pad_w = -height % window, -width % window
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)),
                constant_values=-jnp.inf)
  return [x[:, i::window, j::window] for i in range(window)
          for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_tiled(x: jax.Array, window: int) -> jax.Array:
  """Max pooling of non-overlapping ``window x window`` tiles, ceil mode."""
  return functools.reduce(jnp.maximum, _window_taps(x, window))


def _max_pool_tiled_fwd(x, window):
  y = _max_pool_tiled(x, window)
  return y, (x, y)


def _max_pool_tiled_bwd(window, residuals, grad):
  """Routes each output's gradient to the first tap equal to the maximum."""
  x, y = residuals
  taken = jnp.zeros(y.shape, bool)
  pieces = []
  for tap in _window_taps(x, window):
    first = (tap == y) & ~taken
    taken = taken | first
    pieces.append(jnp.where(first, grad, 0).astype(grad.dtype))
  batch, out_h, out_w, channels = y.shape
  tiles = jnp.stack(pieces, axis=3).reshape(
      batch, out_h, out_w, window, window, channels)
  dx = tiles.transpose(0, 1, 3, 2, 4, 5).reshape(
      batch, out_h * window, out_w * window, channels)
  return (dx[:, :x.shape[1], :x.shape[2]],)


_max_pool_tiled.defvjp(_max_pool_tiled_fwd, _max_pool_tiled_bwd)


def crop_like(x: jax.Array, offset: int, height: int, width: int) -> jax.Array:
  """Caffe's Crop (axis 2): ``x[:, off:off+height, off:off+width]``."""
  if x.shape[1] < offset + height or x.shape[2] < offset + width:
    raise ValueError(
        f"cannot crop {x.shape[1]}x{x.shape[2]} at offset {offset} to "
        f"{height}x{width}")
  return x[:, offset:offset + height, offset:offset + width, :]


def local_response_norm(x: jax.Array, size: int, alpha: float,
                        beta: float, k: float = 1.0) -> jax.Array:
  """Caffe's LRN across channels (docs/reference.md §4.11).

  ``y_c = x_c / (k + alpha / size * sum_{|c' - c| <= size // 2} x_c'^2)^beta``
  with zeros beyond the first and last channel. Note that Caffe divides
  ``alpha`` by ``size``. Computed in float32.
  """
  x32 = x.astype(jnp.float32)
  half = (size - 1) // 2
  window_sums = jax.lax.reduce_window(
      x32 * x32, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
  scale = k + (alpha / size) * window_sums
  return (x32 * scale ** -beta).astype(x.dtype)


# --------------------------------------------------------------------------
# Valid extents: native-size results on padded inputs.
# --------------------------------------------------------------------------
#
# An input padded at the bottom/right to a larger (bucket) shape gives the
# native-size values inside every blob's native extent if everything outside
# that extent is zero when the next layer reads it: a convolution's (or
# pooling window's) taps beyond the native extent then read zeros, which is
# what Caffe's zero padding gives a convolution, and which cannot win a round-up
# max pool over post-ReLU (>= 0) values clipped at the border.


@dataclasses.dataclass(frozen=True)
class Extent:
  """A blob's extent as a function of the input's: ``scale * ((n + offset) //
  divisor) + shift``, the same for height and width.

  The layers' size rules compose in this closed form, because nested floor
  divisions collapse, ``((x // a) + b) // c == (x + a b) // (a c)`` for
  positive ``a, c``. So the geometry is static (these four integers per blob)
  and evaluating it for traced sizes (:meth:`__call__`) is one add, one
  division by a constant and one multiply-add, which XLA can copy into every
  fusion that masks. (Chaining the rules per layer instead makes XLA copy the
  whole chain into each fusion: tenfold HLO, twice the compile time.)

  Attributes:
    offset: Added to the input size.
    divisor: The product of the strides so far.
    scale: The product of the upsampling strides so far.
    shift: Added last.
  """
  offset: int = 0
  divisor: int = 1
  scale: int = 1
  shift: int = 0

  def _floor_div_plus_one(self, add: int, stride: int) -> "Extent":
    """``(e + add) // stride + 1`` of this extent ``e``."""
    if self.scale != 1:
      raise ValueError("a strided layer after an upsampler has no closed-form "
                       "extent")
    return Extent(self.offset + self.divisor * (self.shift + add),
                  self.divisor * stride, 1, 1)

  def conv(self, kernel: int, stride: int = 1, pad: int = 0) -> "Extent":
    """After a convolution, rounding down as Caffe does
    (:func:`conv_output_size`, in closed form)."""
    return self._floor_div_plus_one(2 * pad - kernel, stride)

  def pool(self, window: int, stride: int) -> "Extent":
    """After :func:`max_pool_ceil`, rounding up (docs/reference.md §4.2):
    ``ceil((n - window) / stride) + 1``, for ``n >= window`` (the caller
    checks, :meth:`minimum`)."""
    return self._floor_div_plus_one(stride - 1 - window, stride)

  def upsample(self, kernel: int, stride: int) -> "Extent":
    """After a VALID transposed convolution (docs/reference.md §4.3):
    ``(n - 1) s + k``. Zero inputs beyond ``n`` give zero outputs beyond it, so
    a bias-free upsampler needs no mask after it."""
    return Extent(self.offset, self.divisor, self.scale * stride,
                  (self.shift - 1) * stride + kernel)

  def minimum(self) -> int:
    """The extent of a 1-pixel input (the smallest: extents grow with n)."""
    return int(self(np.ones((1, 2), np.int64))[0, 0])

  def __call__(self, sizes: Any) -> Any:
    """The extents ``[N, 2]`` of inputs of ``sizes`` ``[N, 2]`` (int32 for a
    JAX array, traced or not; exact integers for NumPy)."""
    if isinstance(sizes, np.ndarray):
      return self.scale * ((sizes + self.offset) // self.divisor) + self.shift
    x = jnp.asarray(sizes, jnp.int32) + self.offset
    if self.divisor != 1:
      if self.offset >= -1:  # n >= 1: non-negative, so unsigned division.
        x = jax.lax.div(x.astype(jnp.uint32),
                        jnp.uint32(self.divisor)).astype(jnp.int32)
      else:
        x = jnp.floor_divide(x, self.divisor)
    return x * self.scale + self.shift if self.scale != 1 else x + self.shift


def mask_outside(x: jax.Array, extent: Extent | None,
                 sizes: jax.Array | None) -> jax.Array:
  """Zeroes ``x [N, H, W, C]`` outside each example's top-left ``extent``.

  Two iota comparisons broadcast to ``[N, H, W, 1]`` and one select: no
  gathers, any H and W, traced sizes, and gradients that stop at the zeroed
  positions.

  Args:
    x: A blob.
    extent: Its extent as a function of the input size.
    sizes: int32 ``[N, 2]`` input sizes; ``None`` returns ``x`` itself
      (nothing traced).
  """
  if sizes is None or extent is None:
    return x
  extent = extent(sizes)
  rows = jax.lax.broadcasted_iota(jnp.int32, (1, x.shape[1], 1, 1), 1)
  cols = jax.lax.broadcasted_iota(jnp.int32, (1, 1, x.shape[2], 1), 2)
  inside = ((rows < extent[:, 0, None, None, None])
            & (cols < extent[:, 1, None, None, None]))
  return jnp.where(inside, x, jnp.zeros((), x.dtype))


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


def _conv_variables(module: nn.Module, x: jax.Array, k: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``nn.Conv``'s variables (HWIO ``kernel``, ``bias``, its initialisers,
  float32) for a ``k x k`` kernel, and ``x`` and both in ``module.dtype``."""
  kernel = module.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], module.features), jnp.float32)
  bias = module.param("bias", nn.initializers.zeros, (module.features,),
                      jnp.float32)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


def conv_output_size(size: int, kernel: int, stride: int = 1,
                     pad: int = 0) -> int:
  """Caffe's convolution output size, rounding down (docs/reference.md §4.1):
  ``(n + 2 p - k) // s + 1``; :meth:`Extent.conv` is its closed form for
  traced sizes."""
  return (size + 2 * pad - kernel) // stride + 1


def _patch_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A VALID convolution of ``x`` with an HWIO ``kernel`` as one matmul: the
  ``k * k`` shifted (strided) views concatenated along the channels,
  tap-major as the kernel flattens."""
  k, features = kernel.shape[0], kernel.shape[-1]
  out_h, out_w = (conv_output_size(n, k, stride) for n in x.shape[1:3])
  patches = x if k == stride == 1 else jnp.concatenate(
      [x[:, i:i + (out_h - 1) * stride + 1:stride,
         j:j + (out_w - 1) * stride + 1:stride]
       for i in range(k) for j in range(k)], axis=-1)
  return jax.lax.dot_general(patches, kernel.reshape(-1, features),
                             (((3,), (0,)), ((), ())))


class PatchConv(nn.Module):
  """A VALID stride-1 convolution computed as one matmul over its patches.

  The same function and variables as ``nn.Conv(features, (k, k),
  padding="VALID")`` (HWIO ``kernel``, ``bias``, the same initialisers), for
  the convolutionalised fully connected layers fc6/fc7: the ``k * k`` shifted
  views of the input are concatenated along the channels (tap-major, as the
  HWIO kernel flattens) and multiplied by the ``(k * k * C_in, C_out)``
  kernel. Its gradients are two matmuls too, where XLA:CPU's convolution
  kernels take many times the forward's time for a 7x7 kernel's gradient.

  Attributes:
    features: Output channels.
    kernel_size: Kernel height and width ``k``.
    dtype: Computation dtype; parameters are float32.
  """
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    x, kernel, bias = _conv_variables(self, x, k)
    return _patch_matmul(x, kernel, 1) + bias


def _reaching_outputs(size: int, kernel: int, stride: int, pad: int
                      ) -> tuple[int, int, int]:
  """``(outputs, first, last)`` along one axis of a padded convolution:
  ``first..last`` are the outputs whose window reaches the input; the others
  see only padding."""
  outputs = conv_output_size(size, kernel, stride, pad)
  first = max(0, -(-(pad - kernel + 1) // stride))
  last = min(outputs - 1, (size - 1 + pad) // stride)
  return outputs, first, last


class PaddedInputConv(nn.Module):
  """The first convolution of an FCN, computed only where it reaches the image.

  The same function and variables as ``nn.Conv(features, (k, k), strides=s,
  padding=pad)`` (HWIO ``kernel``, ``bias``, the same initialisers). The
  FCNs pad their input by 100 (docs/reference.md §4.2), far more than the
  kernel: an output whose window lies wholly in the zero padding is exactly
  its bias, so only the outputs whose windows reach the image are computed
  (a convolution of the input padded by at most ``k - 1``) and the others
  are filled with the bias. Each computed output sums the same products as
  the plain convolution (the omitted ones are products with zero), so the
  two agree to float rounding, gradients included
  (``tests/layers_test.py``). On a 224x224 image VGG16's conv1_1 computes
  226x226 outputs instead of 422x422. With ``as_matmul`` (CPUs, as
  :class:`PatchConv`) the computed part is one matmul over its patches: with
  3 or 4 input channels XLA:CPU's convolution kernels take several times as
  long, its weight gradient most of all (``benchmarks/conv_layers.py``).

  Attributes:
    features: Output channels.
    kernel_size: Kernel height and width ``k``.
    padding: Zero padding on every side.
    stride: Stride on both axes.
    dtype: Computation dtype; parameters are float32.
    as_matmul: Compute the reaching outputs as one matmul over patches.
  """
  features: int
  kernel_size: int
  padding: int
  stride: int = 1
  dtype: Any = jnp.float32
  as_matmul: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, pad = self.kernel_size, self.stride, self.padding
    x, kernel, bias = _conv_variables(self, x, k)
    axes = [_reaching_outputs(n, k, s, pad) for n in x.shape[1:3]]
    full = jnp.broadcast_to(bias, (x.shape[0], axes[0][0], axes[1][0],
                                   self.features))
    if any(last < first for _, first, last in axes):
      return full
    counts = [last - first + 1 for _, first, last in axes]
    # Padding that yields exactly the reaching outputs: before, the part of
    # ``pad`` that the first reaching window still covers; after, whatever
    # the last one needs (between 0 and ``pad`` for k >= s, pad >= s - 1).
    before = [pad - first * s for _, first, _ in axes]
    after = [(count - 1) * s + k - n - b
             for count, n, b in zip(counts, x.shape[1:3], before)]
    x = jnp.pad(x, ((0, 0), (before[0], after[0]), (before[1], after[1]),
                    (0, 0)))
    if self.as_matmul:
      y = _patch_matmul(x, kernel, s)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (s, s), "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.lax.dynamic_update_slice(
        full, y + bias, (0, axes[0][1], axes[1][1], 0))


# Backends on which the fully connected layers are PatchConv and the first
# convolution a matmul (measured faster
# on XLA:CPU, benchmarks/README.md); elsewhere they stay nn.Conv.
PATCH_CONV_BACKENDS = ("cpu",)
_TARGET_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fcn_jax_target_platform", default=None)


@contextlib.contextmanager
def target_platform(platform: str) -> Iterator[None]:
  """Builds the layers for ``platform`` rather than ``jax.default_backend()``.

  For compiling ahead of time for other devices than the host's (the TPU dry
  run traces on a CPU host for TPU chips, :mod:`fcn_jax.dry_run`).
  """
  token = _TARGET_PLATFORM.set(platform)
  try:
    yield
  finally:
    _TARGET_PLATFORM.reset(token)


def fc_conv(features: int, kernel: int, name: str, dtype: Any) -> nn.Module:
  """A convolutionalised fully connected layer (VALID, stride 1): a
  :class:`PatchConv` on :data:`PATCH_CONV_BACKENDS`, else ``nn.Conv``; the
  same variables and function either way. The platform is the default
  backend's, or the one :func:`target_platform` sets."""
  platform = _TARGET_PLATFORM.get() or jax.default_backend()
  if platform in PATCH_CONV_BACKENDS:
    return PatchConv(features, kernel, dtype=dtype, name=name)
  return caffe_conv(features, kernel, 0, name, dtype)


def input_conv(features: int, kernel: int, padding: int, name: str,
               dtype: Any, *, stride: int = 1) -> nn.Module:
  """A trunk's first convolution: :class:`PaddedInputConv` where some
  outputs see only padding (``padding >= kernel``), else :func:`caffe_conv`;
  the same variables and function either way. On
  :data:`PATCH_CONV_BACKENDS` a stride-1 one (VGG16's 3x3 conv1_1) is one
  matmul; CaffeNet's 11x11 stride-4 conv1 stays a convolution (121 shifted
  views would be slow to compile and ~7x its input in memory)."""
  if padding < kernel:
    return caffe_conv(features, kernel, padding, name, dtype, stride=stride)
  platform = _TARGET_PLATFORM.get() or jax.default_backend()
  as_matmul = platform in PATCH_CONV_BACKENDS and stride == 1
  return PaddedInputConv(features, kernel, padding, stride, dtype=dtype,
                         as_matmul=as_matmul, name=name)


def caffe_conv(features: int, kernel: int, padding: int, name: str,
               dtype: Any, *, stride: int = 1, groups: int = 1,
               zero_init: bool = False) -> nn.Conv:
  """A Caffe convolution: HWIO float32 parameters, computation in ``dtype``.

  Caffe rounds the output size down (docs/reference.md §4.1), as VALID
  strided convolutions of the explicitly padded input do. ``groups`` splits
  inputs and outputs into consecutive halves (thirds, ...) as Caffe's
  ``group`` does; the kernel is then ``(k, k, C_in / groups, C_out)``.
  """
  init = {}
  if zero_init:  # Caffe's default (constant 0) filler.
    init = dict(kernel_init=nn.initializers.zeros,
                bias_init=nn.initializers.zeros)
  extra = {}
  if stride != 1:
    extra["strides"] = (stride, stride)
  if groups != 1:
    extra["feature_group_count"] = groups
  return nn.Conv(features, (kernel, kernel), padding=padding, name=name,
                 dtype=dtype, param_dtype=jnp.float32, **extra, **init)
