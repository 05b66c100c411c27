"""The train step, written for one device's shard of a batch.

:mod:`fcn_jax.parallel` runs it data-parallel: the state is replicated,
gradients are averaged over devices, and the loss is normalised over the
global batch, so N devices give the same update as one device with the whole
batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from fcn_jax import models
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax.data import batch_transforms
from fcn_jax.models import losses
from fcn_jax.training import state as state_lib


# The batch entries a step reads (parallel.shard(keys=...)).
BATCH_KEYS = ("image", "label", batch_transforms.SIZE)


def train_step(state: state_lib.TrainState, batch: Mapping[str, Any], *,
               model: models.FCN, tx: optax.GradientTransformation,
               loss_normalization: str = "sum",
               loss_sampling_p: float = 1.0,
               class_weights: Sequence[float] | None = None
               ) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One SGD step (one ``iter_size`` micro-step) on a shard of the batch.

  The loss is normalised over the global batch: the summed loss by the
  global number of images, or the valid-pixel loss by the global (weighted)
  number of valid pixels. Each device differentiates its share of that global
  loss, scaled by the device count so that ``pmean`` of the gradients is the
  gradient of the global loss. A multi-head net (SIFT Flow) adds the losses
  of its heads, each normalised on its own, with weight 1 each, as the
  reference's two SoftmaxWithLoss layers do (docs/reference.md §8.3).

  Args:
    state: The replicated train state.
    batch: ``image`` float32 ``[b, H, W, C]`` (a dict of them keyed by input
      name for a multi-input net) and ``label`` int ``[b, H, W]`` (a dict
      keyed by head for a multi-head net); 255 = ignored. At shape buckets
      (:mod:`fcn_jax.data.buckets`) also ``size`` int32 ``[b, 2]``, each
      image's true (height, width) at the top-left, which the net masks to
      (labels beyond it are 255), so the step equals the native-size one.
    model: The FCN.
    tx: The optimizer.
    loss_normalization: ``"sum"`` or ``"valid"`` (see :mod:`fcn_jax.models.losses`).
    loss_sampling_p: Keep probability of each pixel in the loss.
    class_weights: Optional per-class loss weights (single-head nets).

  Returns:
    ``(new_state, metrics)`` with the global ``loss``, ``valid_pixels`` and
    training ``pixel_acc`` of the batch (of the first head; a multi-head net
    adds ``<head>_loss`` and ``<head>_pixel_acc`` for every head).
  """
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           parallel.device_index())
  dropout_rng, sampling_rng = jax.random.split(rng)
  labels = model.per_head(batch["label"])
  classes = model.head_classes
  shape = next(iter(labels.values())).shape
  keep = losses.sample_keep_mask(sampling_rng, shape, loss_sampling_p)
  pixel_weights = {h: losses.pixel_weights(labels[h], classes[h],
                                           class_weights=class_weights,
                                           keep_mask=keep)
                   for h in classes}
  total_normalizer = parallel.psum({
      h: losses.normalizer(pixel_weights[h], shape[0], loss_normalization)
      for h in classes})
  num_devices = parallel.device_count_in_step()

  def head_sum(per_head):
    return functools.reduce(jnp.add, per_head.values())

  def loss_fn(params):
    logits = model.per_head(model.apply(
        {"params": params}, batch["image"], train=True,
        rngs={"dropout": dropout_rng}, **batch_transforms.size_kwargs(batch)))
    loss_sum = {h: losses.weighted_loss_sum(logits[h], labels[h],
                                            pixel_weights[h])
                for h in classes}
    share = head_sum({h: losses.normalized_loss(loss_sum[h],
                                                total_normalizer[h])
                      for h in classes}) * num_devices
    return share, (loss_sum, logits)

  grads, (loss_sum, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  totals = {}
  for h, c in classes.items():
    valid = (labels[h] >= 0) & (labels[h] < c)
    correct = valid & (jnp.argmax(logits[h], axis=-1) == labels[h])
    totals[h] = {"loss_sum": loss_sum[h],
                 "valid": jnp.sum(valid).astype(jnp.float32),
                 "correct": jnp.sum(correct).astype(jnp.float32)}
  totals = parallel.psum(totals)
  head_metrics = {  # In the heads' order (psum returns sorted dicts).
      h: {"loss": losses.normalized_loss(totals[h]["loss_sum"],
                                         total_normalizer[h]),
          "valid_pixels": totals[h]["valid"],
          "pixel_acc": totals[h]["correct"] / jnp.maximum(totals[h]["valid"],
                                                          1.0)}
      for h in classes}
  metrics = dict(next(iter(head_metrics.values())))
  if model.multi_head:
    metrics["loss"] = head_sum({h: m["loss"] for h, m in head_metrics.items()})
    for h, m in head_metrics.items():
      metrics[f"{h}_loss"] = m["loss"]
      metrics[f"{h}_pixel_acc"] = m["pixel_acc"]
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def make_train_fn(model: models.FCN, tx: optax.GradientTransformation,
                  run: run_config.Run,
                  devices: Sequence[jax.Device], *,
                  donate_state: bool = True) -> Callable[..., Any]:
  """The data-parallel train step over ``devices``, as training runs it.

  Args:
    model: The FCN.
    tx: The optimizer (:func:`fcn_jax.training.optim.create_model_optimizer`).
    run: The resolved run: its ``optim.loss_normalization``,
      ``optim.loss_sampling_p``, ``optim.class_weights`` and ``parallel``.
    devices: From :func:`fcn_jax.parallel.devices_for_batch`.
    donate_state: Reuse the state's buffers for the new state.

  Returns:
    ``(state, sharded_batch) -> (new_state, metrics)``; see :func:`train_step`.
  """
  step = functools.partial(
      train_step, model=model, tx=tx,
      loss_normalization=run.optim.loss_normalization,
      loss_sampling_p=float(run.optim.loss_sampling_p),
      class_weights=tuple(run.optim.class_weights) or None)
  return parallel.replicate_step(step, devices,
                                 per_device_outputs=(False, False),
                                 donate_state=donate_state,
                                 mode=run.config.parallel)
