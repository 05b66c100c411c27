"""Caffe's SGD solver as an optax transformation (docs/reference.md §5.2).

Every parameter belongs to one group, read from the variable tree:

==========  =============================  ================================
group       parameters                     Caffe multipliers
==========  =============================  ================================
``weight``  ``kernel`` of every layer,     lr_mult 1, decay_mult 1
            and ``bias`` of the layers in
            ``default_bias_layers``
``bias``    ``bias`` of every other layer  ``bias_lr_mult`` (2), ``bias_decay_mult`` (0)
``frozen``  layers in ``frozen_layers``    lr_mult 0: never updated, no decay
==========  =============================  ================================

Frozen layers are the fixed bilinear upsamplers and the at-once Scale layers
(``model.frozen_layers()``) and, with ``config.optim.trainable = "score"``
(CVPR Table 2's FCN-32s-fixed), every layer but the score layers
(``model.score_layers()``). ``default_bias_layers`` are the layers whose
biases keep Caffe's default multipliers, FCN-AlexNet's trunk
(``model.default_bias_multiplier_layers()``, docs/reference.md §2.3).
:func:`create_model_optimizer` reads all three from the model. Within a group
with learning rate ``lr`` (the
schedule times the multiplier), decay ``d`` and momentum ``mu`` the update is
exactly Caffe's::

  g <- g + d * w;   v <- mu * v + lr * g;   w <- w - v

(optax keeps ``-v``). The learning rate enters before the momentum, so a
changing schedule affects only new gradients, as in Caffe. With
``iter_size > 1`` the mean of ``iter_size`` successive gradients is applied
once (Caffe's gradient accumulation; ``optax.MultiSteps``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import ml_collections
import optax

from fcn_jax import default_config
from fcn_jax import errors


WEIGHT = "weight"
BIAS = "bias"
FROZEN = "frozen"


def param_labels(params: Any, frozen_layers: Iterable[str],
                 default_bias_layers: Iterable[str] = ()) -> Any:
  """Labels every parameter ``weight``, ``bias`` or ``frozen``.

  Args:
    params: ``{layer_name: {"kernel" | "bias" | "scale": array}}``.
    frozen_layers: Names of layers that are never trained.
    default_bias_layers: Layers whose bias is trained like a weight.

  Returns:
    A tree of the same structure with a label per leaf.
  """
  frozen_layers = set(frozen_layers)
  default_bias_layers = set(default_bias_layers)
  unknown = (frozen_layers | default_bias_layers) - set(params)
  if unknown:
    raise ValueError(f"layers {sorted(unknown)} are not in the params "
                     f"(layers: {sorted(params)})")

  def label(path, _):
    layer = path[0].key
    leaf = path[-1].key
    if layer in frozen_layers:
      return FROZEN
    if leaf == "kernel" or (leaf == "bias" and layer in default_bias_layers):
      return WEIGHT
    if leaf == "bias":
      return BIAS
    raise ValueError(
        f"parameter {layer}/{leaf} is neither a kernel nor a bias and its "
        f"layer is not frozen; the optimizer does not know its multipliers")

  return jax.tree_util.tree_map_with_path(label, params)


def create_learning_rate_fn(optim: ml_collections.ConfigDict,
                            num_train_steps: int) -> optax.Schedule:
  """The base learning rate as a function of the update count.

  ``fixed`` is Caffe's policy; ``poly`` decays as ``(1 - t/T)^poly_power`` and
  ``cosine`` along a half cosine, both to ``base_lr * end_lr_factor`` at the
  last step. ``warmup_steps`` > 0 prepends a linear ramp from 0.
  """
  base = float(optim.base_lr)
  warmup = int(optim.warmup_steps)
  decay_steps = max(1, num_train_steps - warmup)
  if optim.schedule == "fixed":
    main = optax.constant_schedule(base)
  elif optim.schedule == "poly":
    main = optax.polynomial_schedule(
        init_value=base, end_value=base * optim.end_lr_factor,
        power=optim.poly_power, transition_steps=decay_steps)
  elif optim.schedule == "cosine":
    main = optax.cosine_decay_schedule(
        init_value=base, decay_steps=decay_steps, alpha=optim.end_lr_factor)
  else:
    raise errors.UserError(f"config.optim.schedule must be one of "
                     f"{default_config.SCHEDULES}, got {optim.schedule!r}")
  if warmup <= 0:
    return main
  ramp = optax.linear_schedule(0.0, base, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def caffe_sgd(learning_rate: Callable[[Any], Any], momentum: float,
              weight_decay: float) -> optax.GradientTransformation:
  """One Caffe SGD parameter group: decay, then lr, then momentum."""
  steps = []
  if weight_decay:
    steps.append(optax.add_decayed_weights(weight_decay))
  steps.append(optax.scale_by_schedule(lambda count: -learning_rate(count)))
  steps.append(optax.trace(decay=momentum, nesterov=False))
  return optax.chain(*steps)


def create_optimizer(optim: ml_collections.ConfigDict, params: Any,
                     frozen_layers: Iterable[str], num_train_steps: int, *,
                     score_layers: Iterable[str] = (),
                     default_bias_layers: Iterable[str] = ()
                     ) -> optax.GradientTransformation:
  """Caffe SGD with per-group multipliers, frozen layers and iter_size.

  Args:
    optim: The ``config.optim`` group.
    params: The parameter tree (for the group labels).
    frozen_layers: ``model.frozen_layers()``.
    num_train_steps: Optimizer updates, for the decaying schedules.
    score_layers: ``model.score_layers()``: with ``optim.trainable =
      "score"`` every other layer is frozen too.
    default_bias_layers: ``model.default_bias_multiplier_layers()``.

  Returns:
    An optax transformation; call ``update`` once per batch.

  Raises:
    ValueError: A bad ``optim`` value, or ``trainable = "score"`` without
      score layers.
  """
  frozen_layers = set(frozen_layers)
  if optim.get("trainable", "all") == "score":
    score_layers = set(score_layers)
    if not score_layers:
      raise ValueError("config.optim.trainable='score' needs the model's "
                       "score layers (model.score_layers())")
    frozen_layers |= set(params) - score_layers
  lr_fn = create_learning_rate_fn(optim, num_train_steps)
  bias_lr_mult = float(optim.bias_lr_mult)
  tx = optax.multi_transform(
      {
          WEIGHT: caffe_sgd(lr_fn, optim.momentum, optim.weight_decay),
          BIAS: caffe_sgd(lambda count: bias_lr_mult * lr_fn(count),
                          optim.momentum,
                          optim.weight_decay * optim.bias_decay_mult),
          FROZEN: optax.set_to_zero(),
      },
      param_labels(params, frozen_layers, default_bias_layers))
  if optim.iter_size > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.iter_size)
  return tx


def create_model_optimizer(optim: ml_collections.ConfigDict, params: Any,
                           model: Any, num_train_steps: int
                           ) -> optax.GradientTransformation:
  """:func:`create_optimizer` with the frozen, score and default-bias layers
  of ``model`` (an :class:`fcn_jax.models.FCN`)."""
  return create_optimizer(
      optim, params, model.frozen_layers(), num_train_steps,
      score_layers=model.score_layers(),
      default_bias_layers=model.default_bias_multiplier_layers())
