"""pmap and jit + shard_map run the same steps to the same results.

8 fake CPU devices (tests/conftest.py); a tiny FCN-8s (``width_divisor`` 64)
on 32 px images, dropout on: the per-device dropout keys must follow the same
device order in both modes for the parameters to agree.
"""

import jax
import numpy as np
import pytest

from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax.training import optim
from fcn_jax import parallel
from fcn_jax.evaluation import evaluator
from fcn_jax import run_config
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib
from tests import helpers
from tests.tiny_fcn import random_variables

NUM_CLASSES = 5
IMAGE_SIZE = 32
NUM_DEVICES = 8
NUM_STEPS = 3


def _config(mode):
  config = default_config.get_config()
  config.parallel = mode
  config.model.name = "fcn8s"
  config.model.num_classes = NUM_CLASSES
  config.model.width_divisor = 64
  config.model.dropout_rate = 0.5
  config.optim.base_lr = 1e-2
  config.optim.momentum = 0.9
  config.optim.loss_normalization = "valid"
  config.batch_size = config.eval_batch_size = 2 * NUM_DEVICES
  return config


def _batch(seed):
  rng = np.random.default_rng(seed)
  shape = (2 * NUM_DEVICES, IMAGE_SIZE, IMAGE_SIZE)
  labels = rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)
  labels[rng.random(shape) < 0.2] = 255
  images = (rng.normal(size=shape + (3,)) * 40).astype(np.float32)
  return {"image": images, "label": labels,
          "valid": np.arange(shape[0]) < shape[0] - 3}


def _train_and_evaluate(mode):
  """NUM_STEPS train steps, then one eval step, as training.loop runs them."""
  config = _config(mode)
  model = run_config.model_spec(config).create()
  params = random_variables(model, bias_std=0.0)["params"]  # He normal.
  rng = np.random.default_rng(0)
  for layer in ("score_fr", "score_pool4", "score_pool3"):
    # Non-zero scores, so that the trunk gets gradients from step 1 on.
    kernel = params[layer]["kernel"]
    params[layer]["kernel"] = (rng.normal(size=kernel.shape) * 0.05).astype(
        np.float32)
  tx = optim.create_optimizer(config.optim, params, model.frozen_layers(),
                              NUM_STEPS)
  devices = parallel.devices_for_batch(config.batch_size)
  assert len(devices) == NUM_DEVICES
  state = parallel.replicate(
      state_lib.create_train_state(params, tx, jax.random.PRNGKey(1)), devices)
  run = helpers.resolved(config)
  step = step_lib.make_train_fn(model, tx, run, devices)
  losses = []
  for seed in range(NUM_STEPS):
    batch = _batch(seed)
    state, metrics = step(state, parallel.shard(
        {"image": batch["image"], "label": batch["label"]}, len(devices)))
    losses.append(float(metrics["loss"]))
  eval_step, eval_devices = evaluator.make_eval_fn(model, run)
  batch = _batch(10)
  totals, predictions = eval_step(state.params,
                                  parallel.shard(batch, len(eval_devices)))
  return dict(step=step, params0=params, losses=losses,
              params=parallel.to_host(state.params),
              totals=jax.device_get(totals),
              predictions=parallel.unshard(predictions))


@pytest.fixture(scope="module")
def runs():
  return {mode: _train_and_evaluate(mode) for mode in parallel.MODES}


def test_jit_is_a_sharded_jit_over_one_mesh(runs):
  step = runs["jit"]["step"]
  assert isinstance(step, parallel.ShardedStep)
  assert step.mesh.axis_names == ("data",)
  assert step.mesh.size == NUM_DEVICES
  assert not isinstance(runs["pmap"]["step"], parallel.ShardedStep)


def test_jit_trains_as_pmap(runs):
  pmap, jit = runs["pmap"], runs["jit"]
  np.testing.assert_allclose(jit["losses"], pmap["losses"], rtol=1e-5)
  assert len(set(pmap["losses"])) == NUM_STEPS
  start = jax.tree_util.tree_leaves(pmap["params0"])
  paths = jax.tree_util.tree_leaves_with_path(pmap["params"])
  moved = 0
  for (path, want), got, before in zip(
      paths, jax.tree_util.tree_leaves(jit["params"]), start):
    # The updates agree to 0.1% of their size (float sums in another order).
    update = np.asarray(want) - np.asarray(before)
    np.testing.assert_allclose(np.asarray(got) - before, update, rtol=1e-3,
                               atol=1e-3 * np.abs(update).max() + 1e-9,
                               err_msg=jax.tree_util.keystr(path))
    moved += path[-1].key == "kernel" and np.abs(update).max() > 1e-5
  assert moved == 18  # Every trainable kernel, not only the scores.


def test_jit_evaluates_as_pmap(runs):
  pmap, jit = runs["pmap"], runs["jit"]
  np.testing.assert_array_equal(jit["totals"]["confusion"],
                                pmap["totals"]["confusion"])
  assert int(jit["totals"]["num_images"]) == 13  # 3 padding examples.
  np.testing.assert_allclose(jit["totals"]["loss_sum"],
                             pmap["totals"]["loss_sum"], rtol=1e-5)
  np.testing.assert_array_equal(jit["predictions"], pmap["predictions"])
  assert jit["predictions"].shape == (2 * NUM_DEVICES, IMAGE_SIZE, IMAGE_SIZE)


def test_sharded_step_splits_the_batch_and_reduces_like_pmap():
  """A naive check of the layout: device i sees block i, in device order."""

  def step(scale, batch):
    index = parallel.device_index().astype(np.float32)
    return (parallel.psum(batch["x"].sum() * scale),
            batch["x"] * scale + 100 * index,
            parallel.device_count_in_step())

  devices = jax.local_devices()[:4]
  x = np.arange(4 * 3 * 2, dtype=np.float32).reshape(12, 2)
  outputs = {}
  for mode in parallel.MODES:
    fn = parallel.replicate_step(step, devices, mode=mode,
                                 per_device_outputs=(False, True, False))
    total, per_device, count = fn(np.float32(2.0),
                                  parallel.shard({"x": x}, 4))
    outputs[mode] = parallel.unshard(per_device)
    assert float(total) == 2.0 * x.sum()
    assert int(count) == 4
  want = 2 * x + 100 * np.repeat(np.arange(4), 3)[:, None]
  np.testing.assert_array_equal(outputs["pmap"], want)
  np.testing.assert_array_equal(outputs["jit"], want)


def test_unknown_mode_is_an_error_naming_the_field():
  with pytest.raises(errors.UserError, match=r"config.parallel must be one of "
                     r"\('pmap', 'jit'\), got 'pjit'"):
    parallel.replicate_step(lambda s, b: (s,), jax.local_devices()[:1],
                            per_device_outputs=(False,), mode="pjit")
  config = _config("pjit")
  with pytest.raises(errors.UserError, match="config.parallel must be one of"):
    run_config.validate_config(config)
