"""Pixelwise softmax cross-entropy with an ignore label (Caffe SoftmaxWithLoss).

The loss of a batch is ``sum(w * CE) / normaliser`` where ``CE`` is the
per-pixel cross-entropy of the float32 logits, ``w`` a per-pixel weight (0 for
ignored pixels, i.e. labels outside ``[0, num_classes)`` such as 255; else the
class weight, 1 by default; times a random keep mask when sampling the loss)
and the normaliser depends on ``normalization`` (docs/reference.md §4.9):

* ``"sum"``: the number of images. Caffe's ``normalize: false`` means
  BATCH_SIZE normalisation; with the reference batch of 1 the loss is the plain
  sum over the valid pixels.
* ``"valid"``: the sum of the weights, i.e. the number of valid (kept) pixels
  without class weights (Caffe's ``normalize: true``, VALID). Like Caffe, a
  normaliser below 1 counts as 1, so a batch without valid pixels gives 0.

The parts are separate so that a data-parallel step can reduce the sum and the
normaliser over all devices before dividing (see ``train.train_step``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from fcn_jax import errors

NORMALIZATIONS = ("sum", "valid")


def pixel_weights(labels: jax.Array, num_classes: int, *,
                  class_weights: Sequence[float] | jax.Array | None = None,
                  keep_mask: jax.Array | None = None) -> jax.Array:
  """Per-pixel loss weights: 0 for ignored pixels.

  Args:
    labels: Integer labels ``[N, H, W]``; values outside
      ``[0, num_classes)`` (255 = void, padding) are ignored.
    num_classes: Number of classes ``C``.
    class_weights: Optional ``C`` weights, one per class.
    keep_mask: Optional boolean ``[N, H, W]`` (loss sampling): pixels where it
      is False are dropped.

  Returns:
    Float32 ``[N, H, W]`` weights.
  """
  valid = (labels >= 0) & (labels < num_classes)
  if class_weights is None or len(class_weights) == 0:
    weights = valid.astype(jnp.float32)
  else:
    class_weights = jnp.asarray(class_weights, jnp.float32)
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights must have {num_classes} values, got "
                       f"shape {class_weights.shape}")
    safe = jnp.where(valid, labels, 0)
    weights = jnp.where(valid, class_weights[safe], 0.0)
  if keep_mask is not None:
    weights = weights * keep_mask.astype(jnp.float32)
  return weights


def sample_keep_mask(rng: jax.Array, shape: Sequence[int],
                     keep_probability: float) -> jax.Array | None:
  """Keeps each pixel with ``keep_probability`` (None when it is 1).

  This is the paper's loss sampling (CVPR §4.3): each final-layer cell enters
  the loss independently with probability ``p``. The expected loss is ``p``
  times the full one under ``"sum"``; the paper compensated by using ``1/p``
  times as many images per batch.
  """
  if not 0.0 < keep_probability <= 1.0:
    raise ValueError(f"loss_sampling_p must be in (0, 1], got "
                     f"{keep_probability}")
  if keep_probability == 1.0:
    return None
  return jax.random.bernoulli(rng, keep_probability, tuple(shape))


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``-log softmax(logits)[label]`` per pixel, in float32.

  Ignored labels are replaced by class 0 so the gather stays in range; give
  those pixels weight 0 (:func:`pixel_weights`), which also zeroes their
  gradient.

  Args:
    logits: ``[N, H, W, C]`` scores (any float dtype; cast to float32).
    labels: Integer ``[N, H, W]``.

  Returns:
    Float32 ``[N, H, W]``.
  """
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  safe = jnp.where((labels >= 0) & (labels < num_classes), labels, 0)
  picked = jnp.take_along_axis(log_probs, safe[..., None].astype(jnp.int32),
                               axis=-1)
  return -picked[..., 0]


def weighted_loss_sum(logits: jax.Array, labels: jax.Array,
                      weights: jax.Array) -> jax.Array:
  """``sum(weights * CE)`` over the batch (a float32 scalar)."""
  return jnp.sum(weights * pixel_cross_entropy(logits, labels))


def check_normalization(normalization: str) -> None:
  """Raises :class:`fcn_jax.errors.UserError` unless ``normalization`` is
  one of NORMALIZATIONS (``config.optim.loss_normalization``)."""
  if normalization not in NORMALIZATIONS:
    raise errors.UserError(f"config.optim.loss_normalization must be one of "
                           f"{NORMALIZATIONS}, got {normalization!r}")


def normalizer(weights: jax.Array, num_images: int | jax.Array,
               normalization: str) -> jax.Array:
  """The (local) divisor of the summed loss; reduce it over devices first."""
  check_normalization(normalization)
  if normalization == "sum":
    return jnp.asarray(num_images, jnp.float32)
  return jnp.sum(weights)


def normalized_loss(loss_sum: jax.Array, total_normalizer: jax.Array
                    ) -> jax.Array:
  """Divides by the normaliser, counting a normaliser below 1 as 1 (Caffe)."""
  return loss_sum / jnp.maximum(total_normalizer, 1.0)


def segmentation_loss(logits: jax.Array, labels: jax.Array, *,
                      normalization: str = "sum",
                      class_weights: Sequence[float] | None = None,
                      keep_mask: jax.Array | None = None) -> jax.Array:
  """The loss of one (single-device) batch; see the module docstring."""
  weights = pixel_weights(labels, logits.shape[-1],
                          class_weights=class_weights, keep_mask=keep_mask)
  return normalized_loss(
      weighted_loss_sum(logits, labels, weights),
      normalizer(weights, labels.shape[0], normalization))
