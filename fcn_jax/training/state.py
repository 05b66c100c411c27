"""The train state and where it starts: fresh, scratch or pretrained
parameters and the optimizer of the config."""

from __future__ import annotations

from typing import Any, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import optax

from fcn_jax import checkpointing
from fcn_jax import errors
from fcn_jax import models
from fcn_jax import run_config
from fcn_jax.models import weights
from fcn_jax.training import optim


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: Batches consumed so far. With ``optim.iter_size = k`` an optimizer
      update (a Caffe iteration) takes ``k`` batches, so this is ``k`` times
      the update count that the training loop, the logs and the checkpoint
      directories count; each batch draws its own dropout keys from it.
    params: Model parameters, keyed by Caffe layer name.
    opt_state: The optax state (momentum, schedule counts, accumulators).
    rng: Raw PRNG key for dropout and loss sampling; each batch folds in the
      step and the device index.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  def to_dict(self) -> dict[str, Any]:
    return {"step": self.step, "params": self.params,
            "opt_state": self.opt_state, "rng": self.rng}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainState":
    return cls(step=jnp.asarray(d["step"], jnp.int32), params=d["params"],
               opt_state=d["opt_state"], rng=jnp.asarray(d["rng"]))


def scratch_init(params: Any, scheme: str, rng: jax.Array) -> Any:
  """Re-draws trainable trunk kernels for training without pretrained weights.

  ``"he_normal"`` draws every ``conv*``/``fc*`` kernel from
  ``N(0, 2 / fan_in)`` (He et al. 2015), which keeps ReLU activations at a
  constant scale through the 15 layers; Flax's default (LeCun normal) halves
  their variance at every layer, so a deep trunk without normalisation barely
  learns from scratch. Score layers stay at zero and upsamplers bilinear, as
  in the reference. ``"flax_default"`` keeps the model's own init.
  """
  if scheme == "flax_default":
    return params
  if scheme != "he_normal":
    raise errors.UserError(f"config.scratch_init must be one of {run_config.SCRATCH_INITS}, "
                     f"got {scheme!r}")
  init = jax.nn.initializers.he_normal(in_axis=(0, 1, 2), out_axis=3)
  params = dict(params)
  for index, layer in enumerate(sorted(params)):
    if layer.startswith(("conv", "fc")):
      kernel = params[layer]["kernel"]
      params[layer] = {**params[layer], "kernel": init(
          jax.random.fold_in(rng, index), kernel.shape, kernel.dtype)}
  return params


def initial_params(model: models.FCN, rng: jax.Array,
                   sources: Mapping[str, str], scheme: str
                   ) -> tuple[Any, dict[str, Any] | None]:
  """Fresh parameters, overwritten by name from the ``config.init_from``
  sources (a run's ``init_sources``: :func:`fcn_jax.run_config.init_sources`;
  renamed first layers such as color-D's ``conv1_1_bgrd`` from the source's
  ``conv1_1``, §8.2), or re-drawn by ``scheme`` (``config.scratch_init``,
  :func:`scratch_init`) without them.

  Returns:
    ``(params, source_metadata)``; the metadata (of the first source) is None
    without init_from.
  """
  if not sources:
    logging.warning("No init_from: the trunk starts from random weights "
                    "(%s).", scheme)
    # One program for the model's init and the re-draw: XLA drops the
    # initial draws that the scheme replaces, and each random kernel shape
    # is not compiled a second time, eagerly (seconds per process on CPU).
    # The same numbers as the two steps apart (tests/train_test.py).
    return jax.jit(lambda key: scratch_init(
        models.init_variables(model, key)["params"], scheme, key))(rng), None
  params = models.init_variables(model, rng)["params"]
  metadata = None
  for suffix, path in sources.items():
    source = checkpointing.load(path)
    # Layers a weights export did not read from its file (a VGG16 export's
    # zero score_fr and bilinear upscore, made for its class count) are not
    # weights: the model's own reference init stands.
    made_up = set(((source.metadata.get("report") or {}).get("missing"))
                  or ())
    params, report = weights.copy_by_name(
        {k: v for k, v in source.params.items() if k not in made_up}, params,
        suffix=suffix, renamed=model.renamed_trunk_layers(),
        reinit_class_layers=source.spec.num_classes != model.num_classes)
    logging.info("Initialised %sfrom %s: %s\n%s",
                 f"the {suffix} stream " if suffix else "",
                 source.describe(), report.summary(), report.table())
    metadata = metadata or source.metadata
  return params, metadata


def create_optimizer(run: run_config.Run, params: Any,
                     model: models.FCN) -> optax.GradientTransformation:
  """The optimizer training uses for ``model`` (Caffe SGD of the run's
  ``config.optim`` over its ``config.num_train_steps`` updates)."""
  return optim.create_model_optimizer(run.optim, params, model,
                                      int(run.config.num_train_steps))


def create_train_state(params: Any, tx: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=rng)
