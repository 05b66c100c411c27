"""fcn_jax runners for the benchmarks: a compiled forward pass and train step.

The train step is the project's own: :func:`create_train_step` builds the
config, model, Caffe-SGD optimizer, train state and data-parallel step
(``fcn_jax.parallel.replicate_step``, here over one device) with the functions
``fcn_jax.training.loop.train_and_evaluate`` uses, so the benchmark times what users
run. Both runners compile once per row with ``.lower(...).compile()`` (ahead
of time, so a shape change can never silently recompile inside the timed loop)
and take XLA's FLOP count from that compiled executable. The train step
donates the state (on GPUs), and nothing in the timed loop waits for the host:
metrics stay on the device until the final ``block_until_ready``.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections

from benchmarks import common
from benchmarks import flops
from fcn_jax import default_config
from fcn_jax import models
from fcn_jax.training import optim
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib

# The training settings of the benchmark step (the rest is
# fcn_jax.default_config): the loss normalised over the valid pixels, the
# learning rate that suits it, and the momentum of the modern solvers.
LEARNING_RATE = 1e-4
MOMENTUM = 0.9
LOSS_NORMALIZATION = "valid"


def train_config(row: common.Row, learning_rate: float = LEARNING_RATE
                 ) -> ml_collections.ConfigDict:
  """The training config of a benchmark row.

  ``fcn_jax.default_config`` with the row's model, width, dtype and batch,
  the valid-pixel loss, momentum :data:`MOMENTUM` and ``learning_rate``.
  Everything else (weight decay 5e-4 on weights, biases at twice the rate,
  frozen upsamplers, dropout 0.5) is the default.
  """
  config = default_config.get_config()
  config.mode = "train"
  config.model.name = row.model
  config.model.width_divisor = row.width_divisor
  config.model.dtype = row.dtype
  config.batch_size = row.batch
  config.optim.base_lr = learning_rate
  config.optim.momentum = MOMENTUM
  config.optim.loss_normalization = LOSS_NORMALIZATION
  run_config.validate_config(config)
  return config


def create_train_step(config: ml_collections.ConfigDict,
                      upsample_mode: str = "dense", donate: bool = True
                      ) -> tuple[state_lib.TrainState, Callable[..., Any],
                                 list[jax.Device]]:
  """fcn_jax's train step as ``fcn_jax.training.loop.train_and_evaluate`` builds it.

  The model, optimizer, state and data-parallel step come from the same
  functions as in training, over one device; the parameters are
  :func:`benchmarks.common.random_variables` (speed does not depend on them).

  Args:
    config: From :func:`train_config`.
    upsample_mode: The model's upsample mode (``dense`` or ``depthwise``; a
      benchmark option, not a config field).
    donate: Donate the state to the step (on CPUs as
      ``fcn_jax.parallel.DONATE_ON_CPU`` says).

  Returns:
    ``(state, step, devices)``: the state replicated over ``devices`` and
    ``step(state, sharded_batch) -> (state, metrics)`` with the batch from
    ``parallel.shard({"image": ..., "label": ...}, len(devices))``.
  """
  run = run_config.resolve(config, "dry_run")  # The benchmark feeds batches.
  model = run.spec.create().clone(upsample_mode=upsample_mode)
  devices = jax.local_devices()[:1]
  params = common.random_variables(model)["params"]
  tx = optim.create_model_optimizer(config.optim, params, model,
                                    config.num_train_steps)
  state = state_lib.create_train_state(params, tx,
                                       jax.random.PRNGKey(config.seed))
  step = step_lib.make_train_fn(model, tx, run, devices, donate_state=donate)
  return parallel.replicate(state, devices), step, devices


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
    images = common.random_images(row.batch, row.size)
    labels = common.random_labels(row.batch, row.size)
    if self.train:
      self.state, step, devices = create_train_step(
          train_config(row), row.upsample, self.donate)
      self.host_batch = parallel.shard({"image": images, "label": labels},
                                       len(devices))
      self.facts["donate"] = self.donate and (
          devices[0].platform != "cpu" or parallel.DONATE_ON_CPU)
    else:
      model = models.create_model(row.model, dtype=common.DTYPES[row.dtype],
                                  width_divisor=row.width_divisor,
                                  upsample_mode=row.upsample)
      self.state = jax.device_put(common.random_variables(model))
      self.host_batch = images
      step = jax.jit(functools.partial(model.apply, train=False))
    self.batch = jax.device_put(self.host_batch)
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.facts["compile_seconds"] = time.perf_counter() - start
    self.facts["feed"] = self.feed
    xla = flops.xla_flops(self.compiled)
    self.row_facts = {
        "xla_flops_per_image": xla and xla / row.batch,
        "analytic_flops_per_image": common.analytic_flops(row, self.train),
    }
    self.run(2)  # Warm-up.

  def _batches(self, steps: int) -> Iterator[Any]:
    if self.feed == "device":
      return iter([self.batch] * steps)
    return prefetch_to_device(iter([self.host_batch] * steps))

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    if self.train:
      state = self.state
      for batch in self._batches(steps):
        state, metrics = self.compiled(state, batch)
      jax.block_until_ready((state, metrics))
      self.state = state
    else:
      for images in self._batches(steps):
        logits = self.compiled(self.state, images)
      jax.block_until_ready(logits)
    return time.perf_counter() - start

  def teardown(self) -> None:
    for name in ("state", "compiled", "batch", "host_batch"):
      self.__dict__.pop(name, None)
