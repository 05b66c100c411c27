"""Test-time augmentation: horizontal flips and rescaled copies, averaged.

The one implementation, used by evaluation (:func:`fcn_jax.evaluation.evaluator.eval_step`)
and prediction (:class:`fcn_jax.inference.predictor.Predictor`). It is a traceable JAX
function of a batch of preprocessed images, so it runs inside the compiled
step.

For every scale ``s`` the images are resized to ``round(s * H) x round(s * W)``
(:func:`resize_images`: linear, half-pixel centres, antialiased when
shrinking), optionally mirrored; the network's logits of each variant are
mirrored back, resized back to ``H x W`` (:func:`resize_logits`: linear, pixel
centres aligned, edge values beyond the ends) and **averaged**. Averaging
logits rather than probabilities keeps the saved output logits; its argmax is
the argmax of the geometric mean of the softmax probabilities. The reference
used no augmentation (``TestTimeAugmentation()`` is the identity).

Images may be a pytree of ``[N, H, W, C]`` arrays (several inputs of one
example) and logits a pytree of ``[N, H, W, K]`` arrays (several heads): every
leaf is transformed alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors


def linear_resample(x: Any, coords: np.ndarray, axis: int) -> Any:
  """Samples ``x`` along ``axis`` at fractional ``coords`` by linear
  interpolation; coordinates outside ``[0, n - 1]`` take the edge value.

  Works on NumPy and JAX arrays (the indices are NumPy constants).
  """
  n = x.shape[axis]
  coords = np.clip(np.asarray(coords, np.float64), 0, n - 1)
  low = np.floor(coords).astype(np.int32)
  high = np.minimum(low + 1, n - 1)
  frac = (coords - low).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = len(coords)
  frac = frac.reshape(shape)
  take = jnp.take if isinstance(x, jax.Array) else np.take
  return take(x, low, axis=axis) * (1 - frac) + take(x, high, axis=axis) * frac


def resize_logits(logits: Any, height: int, width: int) -> Any:
  """Resizes ``[..., h, w, C]`` logits to ``[..., height, width, C]``.

  Linear, pixel centres aligned: output row ``i`` samples input row
  ``(i + 0.5) * h / height - 0.5`` (columns alike), edge values beyond the
  ends. NumPy or JAX arrays.
  """
  h, w = logits.shape[-3:-1]
  rows = (np.arange(height) + 0.5) * h / height - 0.5
  cols = (np.arange(width) + 0.5) * w / width - 0.5
  return linear_resample(linear_resample(logits, rows, logits.ndim - 3),
                         cols, logits.ndim - 2)


def resize_images(images: Any, height: int, width: int) -> jax.Array:
  """Resizes ``[..., H, W, C]`` images to ``height x width`` (float32).

  Linear with half-pixel centres, antialiased when shrinking (the filter
  widens with the reduction, as PIL's bilinear does); preprocessing is affine
  per channel, so resizing before or after it is the same.
  """
  images = jnp.asarray(images, jnp.float32)
  shape = images.shape[:-3] + (height, width, images.shape[-1])
  if shape == images.shape:
    return images
  return jax.image.resize(images, shape, method="linear", antialias=True)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """The size of an image rescaled by ``scale`` (at least 1 x 1)."""
  return max(1, round(height * scale)), max(1, round(width * scale))


@dataclasses.dataclass(frozen=True)
class TestTimeAugmentation:
  """Which variants to average.

  Attributes:
    flip: Also run every variant mirrored left-right.
    scales: Image scales to run (1.0 is the image itself).
  """
  __test__ = False  # Not a pytest test class despite its name.

  flip: bool = False
  scales: tuple[float, ...] = (1.0,)

  def __post_init__(self):
    scales = tuple(float(s) for s in self.scales)
    if not scales or any(not s > 0 for s in scales):
      raise errors.UserError(f"test-time scales must be positive, got "
                             f"{self.scales}")
    object.__setattr__(self, "scales", scales)

  @property
  def num_variants(self) -> int:
    return len(self.scales) * (2 if self.flip else 1)

  @property
  def is_identity(self) -> bool:
    return not self.flip and self.scales == (1.0,)

  def __call__(self, forward: Callable[[Any], Any], images: Any) -> Any:
    """The mean logits of the variants.

    Args:
      forward: The network, images -> logits of the images' height and width.
      images: Preprocessed ``[N, H, W, C]`` (or a pytree of them).

    Returns:
      Float32 logits ``[N, H, W, K]`` (or the pytree ``forward`` returns).
    """
    leaves = jax.tree.leaves(images)
    height, width = leaves[0].shape[-3:-1]
    total = None
    for scale in self.scales:
      size = scaled_size(height, width, scale)
      scaled = jax.tree.map(lambda x, size=size: resize_images(x, *size)
                            if x.shape[-3:-1] != size else x, images)
      for flipped in ((False, True) if self.flip else (False,)):
        x = jax.tree.map(lambda a: a[..., ::-1, :], scaled) if flipped \
            else scaled
        logits = jax.tree.map(lambda y: y.astype(jnp.float32), forward(x))
        if flipped:
          logits = jax.tree.map(lambda y: y[..., ::-1, :], logits)
        logits = jax.tree.map(
            lambda y: resize_logits(y, height, width)
            if y.shape[-3:-1] != (height, width) else y, logits)
        total = logits if total is None else jax.tree.map(
            jnp.add, total, logits)
    return jax.tree.map(lambda t: t / self.num_variants, total)


def from_flags(flip: bool = False,
               scales: Sequence[float] | str = (1.0,)) -> TestTimeAugmentation:
  """From command-line values; ``scales`` may be ``"0.75,1,1.25"``."""
  if isinstance(scales, str):
    try:
      scales = tuple(float(v) for v in scales.split(",") if v.strip())
    except ValueError:
      raise errors.UserError(f"--scales must be comma-separated numbers such "
                             f"as 0.75,1.0,1.25; got {scales!r}") from None
  return TestTimeAugmentation(bool(flip), tuple(scales))
