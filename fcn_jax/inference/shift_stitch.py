"""Shift-and-stitch (Long et al., CVPR 2015, §3.2): denser outputs from
``f x f`` shifted passes of a strided network.

:func:`shift_and_stitch` works for any function of images;
:func:`stitched_scores` (``Predictor(shift_stitch=f)``) replaces an FCN's
final upsampler by it, stitching the scores the model feeds that upsampler
(:func:`coarse_scores`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors
from fcn_jax import models
from fcn_jax.inference import tta as tta_lib



def shift_images(images: jax.Array, dy: Any, dx: Any) -> jax.Array:
  """``out[:, i, j] = images[:, i + dy, j + dx]``, zero past the bottom/right.

  The shift may be traced (``dy``, ``dx`` scalars in ``[0, H)``, ``[0, W)``).
  """
  n, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (0, height), (0, width), (0, 0)))
  zero = jnp.zeros((), jnp.int32)
  return jax.lax.dynamic_slice(
      padded, (zero, jnp.asarray(dy, jnp.int32), jnp.asarray(dx, jnp.int32),
               zero), (n, height, width, channels))


def shift_and_stitch(apply_fn: Callable[[jax.Array], jax.Array],
                     images: jax.Array, f: int,
                     stride: int | None = None) -> jax.Array:
  """Shift-and-stitch (Long et al., CVPR 2015, §3.2): a denser output from
  ``f x f`` shifted passes of a strided network.

  ``apply_fn`` maps images ``[N, H, W, C]`` to a coarse output
  ``[N, h, w, K]`` of output stride ``stride`` (cell ``(a, b)`` looks at input
  pixel ``(stride*a, stride*b)`` plus a constant offset). Let
  ``u = stride // f`` and, for each shift ``(dy, dx)`` in
  ``{0..f-1} x {0..f-1}``, let pass ``(dy, dx)`` see the image moved up and
  left by ``(u*dy, u*dx)`` pixels: ``x'[i, j] = x[i + u*dy, j + u*dx]``,
  zero past the bottom/right edge (zero = the mean colour after
  preprocessing). Its cell ``(a, b)`` then looks at original pixel
  ``(stride*a + u*dy, stride*b + u*dx)`` (plus the offset). The passes are
  interleaved so that every output pixel comes from the pass whose shift
  aligns it::

    out[n, f*a + dy, f*b + dx] = apply_fn(x_shifted_by(u*dy, u*dx))[n, a, b]

  so ``out`` has shape ``[N, f*h, f*w, K]`` and output stride ``stride / f``
  (1 when ``f == stride``: a prediction for every pixel, the paper's setting).

  The passes run one after another (``jax.lax.map``), so memory stays that of
  one pass and the time is ``f**2`` passes.

  Args:
    apply_fn: The coarse network, a JAX-traceable function of images.
    images: Preprocessed images ``[N, H, W, C]``.
    f: Shifts per axis (``>= 1``).
    stride: Output stride of ``apply_fn``; must be a multiple of ``f``.
      Defaults to ``f``.

  Returns:
    The stitched output ``[N, f*h, f*w, K]``.
  """
  stride = f if stride is None else stride
  if f < 1 or stride % f:
    raise errors.UserError(
        f"shift-and-stitch needs f >= 1 dividing the output stride; got f={f}, "
        f"stride={stride}")
  step = stride // f
  shifts = np.array([(dy * step, dx * step) for dy in range(f)
                     for dx in range(f)], np.int32)
  passes = jax.lax.map(
      lambda shift: apply_fn(shift_images(images, shift[0], shift[1])),
      jnp.asarray(shifts))
  _, n, h, w, k = passes.shape
  passes = passes.reshape(f, f, n, h, w, k).transpose(2, 3, 0, 4, 1, 5)
  return passes.reshape(n, h * f, w * f, k)


@dataclasses.dataclass(frozen=True)
class CoarseHead:
  """Where an FCN's scores are before its final upsampler.

  Attributes:
    stride: Output stride of the coarse scores (32, 16 or 8).
    center: Input coordinate of coarse cell 0 (cell ``a`` is at
      ``stride * a + center``); from Caffe's coordinate maps: the final
      ``Deconvolution(k, s)`` puts cell ``a`` at upscore ``s*a + (k-1)/2`` and
      the crop subtracts its offset (docs/reference.md §3, §6.2).
  """
  stride: int
  center: float


def coarse_head(model: models.FCN) -> CoarseHead:
  """The stride and alignment of an FCN's last scores before upsampling.

  Raises:
    ValueError: A net with two heads or two streams (shift-and-stitch here
      replaces the final upsampler of one head on one trunk).
  """
  if model.multi_head or model.net.fusion is not None:
    raise errors.UserError(
        f"shift-and-stitch supports one-trunk, one-head nets; "
        f"{model.net.name} has "
        + ("two heads" if model.multi_head else "two streams"))
  final = model.head.final
  return CoarseHead(final.stride,
                    (final.kernel - 1) / 2 - model.head.final_offset)


def coarse_scores(model: models.FCN, variables: Any,
                  images: jax.Array) -> jax.Array:
  """The input of an FCN's final upsampler: ``score_fr`` (32s), the fused
  pool4 scores (16s) or the fused pool3 scores (8s), as float32
  ``[N, h, w, C]``: what the model itself feeds its final upsampler (read by
  intercepting that call; under ``jit`` the rest of the net is dead code)."""
  final = model.head.final.name
  captured = []

  def capture(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name == final:
      captured.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    model.apply(variables, images, train=False)
  return captured[0].astype(jnp.float32)


def stitched_scores(model: models.FCN, variables: Any, images: jax.Array,
                    f: int) -> jax.Array:
  """Dense FCN scores by shift-and-stitch instead of the final upsampler.

  The coarse scores before the final upsampler (stride ``s``: 32 for FCN-32s,
  16 for 16s, 8 for 8s) are shift-and-stitched with ``f`` (which must divide
  ``s``) into a map of stride ``s / f``; its cell ``m`` sits at input
  coordinate ``(s / f) * m + center`` (see :class:`CoarseHead`). Each output
  pixel ``i`` takes that map linearly interpolated at ``(i - center) / (s/f)``
  (edge values beyond the ends). With ``f = s`` every value is computed by the
  network and the interpolation only bridges the half-pixel ``center``; with
  ``f = 1`` this is the bilinear upsampling of the reference deconvolution,
  equal to the model's output away from the borders.

  Args:
    model: An FCN from :func:`fcn_jax.models.create_model`.
    variables: Its variables.
    images: Preprocessed ``[N, H, W, 3]``.
    f: Shifts per axis.

  Returns:
    Float32 scores ``[N, H, W, C]``.
  """
  if not hasattr(model, "net"):
    raise TypeError(
        "stitched_scores needs an fcn_jax.models.FCN; for another network use "
        "shift_and_stitch(apply_fn, images, f, stride).")
  head = coarse_head(model)
  if head.stride % f:
    raise errors.UserError(f"shift-and-stitch f={f} must divide the output "
                           f"stride {head.stride} of {type(model).__name__}")
  stitched = shift_and_stitch(lambda x: coarse_scores(model, variables, x),
                              images, f, head.stride)
  step = head.stride // f
  height, width = images.shape[1:3]
  rows = (np.arange(height) - head.center) / step
  cols = (np.arange(width) - head.center) / step
  return tta_lib.linear_resample(
      tta_lib.linear_resample(stitched, rows, 1), cols, 2)
