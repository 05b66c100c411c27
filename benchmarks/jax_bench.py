"""fcn_jax runners for the benchmarks: a compiled forward pass and train step.

Both compile once per row with ``jit(...).lower(...).compile()`` (ahead of
time, so a shape change can never silently recompile inside the timed loop)
and take XLA's FLOP count from that compiled executable. The train step
donates the state, and nothing in the timed loop waits for the host: metrics
stay on the device until the final ``block_until_ready``.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from benchmarks import flops
from fcn_jax import models

IGNORE_LABEL = 255


# --------------------------------------------------------------------------
# The train step. LOCAL STAND-IN until fcn_jax.train lands in main: switch
# make_train_step to fcn_jax.train.create_train_state / train_step then, so
# that the benchmark measures what users run.
# --------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
  """Parameters, optimizer state and the dropout key of the local step."""
  step: jax.Array
  params: Any
  opt_state: Any
  dropout_key: jax.Array


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the pixels whose label is not 255."""
  valid = labels != IGNORE_LABEL
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(valid, labels, 0))
  return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)


def make_train_step(model: models.FCN, variables: dict[str, Any],
                    learning_rate: float = 1e-3, momentum: float = 0.9,
                    donate: bool = True
                    ) -> tuple[TrainState, Callable[..., Any]]:
  """A jitted SGD-momentum train step with the frozen layers held fixed.

  Args:
    model: The FCN.
    variables: Its ``{'params': ...}``.
    learning_rate: SGD learning rate.
    momentum: SGD momentum.
    donate: Donate the state's buffers to the step (updated in place).

  Returns:
    ``(state, step)`` where ``step(state, images, labels) -> (state,
    metrics)`` is jitted.
  """
  frozen = set(model.frozen_layers())
  labels = {name: "frozen" if name in frozen else "train"
            for name in variables["params"]}
  optimizer = optax.multi_transform(
      {"train": optax.sgd(learning_rate, momentum),
       "frozen": optax.set_to_zero()}, labels)
  state = TrainState(step=jnp.zeros((), jnp.int32),
                     params=variables["params"],
                     opt_state=optimizer.init(variables["params"]),
                     dropout_key=jax.random.key(0))

  def loss_fn(params, images, targets, key):
    logits = model.apply({"params": params}, images, train=True,
                         rngs={"dropout": key})
    return pixel_cross_entropy(logits, targets)

  def step(state: TrainState, images: jax.Array, targets: jax.Array):
    key = jax.random.fold_in(state.dropout_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, images, targets,
                                              key)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, {"loss": loss}

  return state, jax.jit(step, donate_argnums=0 if donate else ())


# --------------------------------------------------------------------------
# Runners.
# --------------------------------------------------------------------------


def prefetch_to_device(batches: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Keeps ``size`` batches in flight to the device (``device_put`` is async)."""
  queue = collections.deque()
  for batch in batches:
    queue.append(jax.device_put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class JaxRunner:
  """fcn_jax forward pass (``train=False``) or train step for one row."""
  label = "fcn_jax"

  def __init__(self, row: common.Row, train: bool, feed: str = "device",
               donate: bool = True):
    self.row = row
    self.train = train
    self.feed = feed
    self.donate = donate
    self.facts: dict[str, Any] = {}
    self.row_facts: dict[str, Any] = {}

  def setup(self) -> None:
    row = self.row
    model = models.create_model(row.model, dtype=common.DTYPES[row.dtype],
                                width_divisor=row.width_divisor,
                                upsample_mode=row.upsample)
    variables = jax.device_put(common.random_variables(model))
    self.host_batch = (common.random_images(row.batch, row.size),
                       common.random_labels(row.batch, row.size))
    self.batch = jax.device_put(self.host_batch)
    start = time.perf_counter()
    if self.train:
      self.state, step = make_train_step(model, variables,
                                         donate=self.donate)
      self.compiled = step.lower(self.state, *self.batch).compile()
    else:
      self.state = variables
      apply = jax.jit(functools.partial(model.apply, train=False))
      self.compiled = apply.lower(variables, self.batch[0]).compile()
    self.facts["compile_seconds"] = time.perf_counter() - start
    self.facts["feed"] = self.feed
    if self.train:
      self.facts["donate"] = self.donate
    xla = flops.xla_flops(self.compiled)
    self.row_facts = {
        "xla_flops_per_image": xla and xla / row.batch,
        "analytic_flops_per_image": common.analytic_flops(row, self.train),
    }
    self.run(2)  # Warm-up.

  def _batches(self, steps: int) -> Iterator[tuple[jax.Array, jax.Array]]:
    if self.feed == "device":
      return iter([self.batch] * steps)
    return prefetch_to_device(iter([self.host_batch] * steps))

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    if self.train:
      state = self.state
      for images, labels in self._batches(steps):
        state, metrics = self.compiled(state, images, labels)
      jax.block_until_ready((state, metrics))
      self.state = state
    else:
      for images, _ in self._batches(steps):
        logits = self.compiled(self.state, images)
      jax.block_until_ready(logits)
    return time.perf_counter() - start

  def teardown(self) -> None:
    for name in ("state", "compiled", "batch", "host_batch"):
      self.__dict__.pop(name, None)
