"""Caffe SGD semantics (docs/reference.md §5.2) against a NumPy statement."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fcn_jax import default_config
from fcn_jax import models
from fcn_jax.training import optim


def _optim_config(**overrides):
  config = default_config.get_config().optim
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def _toy_params(seed=0):
  """A params tree shaped like the model's: layers with kernel/bias."""
  rng = np.random.default_rng(seed)
  return {
      "conv1_1": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                  "bias": rng.normal(size=(4,)).astype(np.float32)},
      "score_fr": {"kernel": rng.normal(size=(1, 1, 4, 3)).astype(np.float32),
                   "bias": rng.normal(size=(3,)).astype(np.float32)},
      "upscore": {"kernel": rng.normal(size=(4, 4, 3, 3)).astype(np.float32)},
  }


def _random_grads(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda p: rng.normal(size=p.shape).astype(np.float32), params)


def _caffe_reference(params, grads_seq, lr_at, momentum, weight_decay,
                     bias_lr_mult, bias_decay_mult, frozen):
  """docs/reference.md §5.2 literally, in float64: per-blob lr/decay, v."""
  w = {k: {n: np.asarray(a, np.float64) for n, a in v.items()}
       for k, v in params.items()}
  hist = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in w.items()}
  for t, grads in enumerate(grads_seq):
    for layer in w:
      for name in w[layer]:
        if layer in frozen:
          lr_mult, decay_mult = 0.0, 0.0
        elif name == "bias":
          lr_mult, decay_mult = bias_lr_mult, bias_decay_mult
        else:
          lr_mult, decay_mult = 1.0, 1.0
        g = np.asarray(grads[layer][name], np.float64)
        g = g + weight_decay * decay_mult * w[layer][name]
        hist[layer][name] = (momentum * hist[layer][name]
                             + lr_at(t) * lr_mult * g)
        w[layer][name] = w[layer][name] - hist[layer][name]
  return w


def _run(tx, params, grads_seq):
  state = tx.init(params)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  update = jax.jit(tx.update)
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_param_labels_follow_the_model_tree():
  # Labels depend on the tree only: its shapes, without computing an init.
  model = models.create_model("fcn8s_atonce", width_divisor=64)
  params = models.param_shapes(model)
  labels = optim.param_labels(params, model.frozen_layers())
  for layer, leaves in labels.items():
    for name, label in leaves.items():
      if layer.startswith(("upscore", "scale_")):
        assert label == optim.FROZEN, (layer, name)
      elif name == "kernel":
        assert label == optim.WEIGHT, (layer, name)
      else:
        assert (name, label) == ("bias", optim.BIAS), (layer, name)
  learned = models.create_model("fcn8s", width_divisor=64,
                                learn_upsampling=True)
  labels = optim.param_labels(models.param_shapes(learned),
                              learned.frozen_layers())
  assert labels["upscore2"]["kernel"] == optim.WEIGHT
  assert labels["upscore_pool4"]["kernel"] == optim.WEIGHT
  assert labels["upscore8"]["kernel"] == optim.FROZEN


def test_param_labels_reject_unknown_leaves_and_layers():
  with pytest.raises(ValueError, match="neither a kernel nor a bias"):
    optim.param_labels({"bn": {"gamma": np.ones(2)}}, ())
  with pytest.raises(ValueError, match="not in the params"):
    optim.param_labels({"fc6": {"kernel": np.ones(2)}}, ("upscore",))


@pytest.mark.parametrize("schedule", ["fixed", "poly"])
def test_update_equals_caffe_sgd(schedule):
  params = _toy_params()
  grads_seq = [_random_grads(params, seed) for seed in range(5)]
  config = _optim_config(base_lr=0.01, momentum=0.9, weight_decay=0.05,
                         schedule=schedule, poly_power=0.9,
                         end_lr_factor=0.0)
  tx = optim.create_optimizer(config, params, ("upscore",),
                              num_train_steps=8)
  got = _run(tx, params, grads_seq)
  lr_at = lambda t: 0.01 * (1 - t / 8) ** 0.9 if schedule == "poly" else 0.01
  want = _caffe_reference(params, grads_seq, lr_at, 0.9, 0.05,
                          bias_lr_mult=2.0, bias_decay_mult=0.0,
                          frozen={"upscore"})
  for layer in want:
    for name in want[layer]:
      np.testing.assert_allclose(np.asarray(got[layer][name]),
                                 want[layer][name], rtol=1e-5, atol=1e-6,
                                 err_msg=f"{layer}/{name}")


def test_bias_lr_multiplier_and_decay_mask():
  """One step from zero momentum: weight moves lr*(g + wd*w), bias 2*lr*g."""
  params = _toy_params(1)
  grads = _random_grads(params, 7)
  lr, wd = 0.1, 0.01
  tx = optim.create_optimizer(
      _optim_config(base_lr=lr, momentum=0.99, weight_decay=wd),
      params, ("upscore",), num_train_steps=1)
  new = _run(tx, params, [grads])
  for layer in ("conv1_1", "score_fr"):
    np.testing.assert_allclose(
        np.asarray(new[layer]["kernel"]),
        params[layer]["kernel"] - lr * (grads[layer]["kernel"]
                                        + wd * params[layer]["kernel"]),
        rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(new[layer]["bias"]),
        params[layer]["bias"] - 2 * lr * grads[layer]["bias"],
        rtol=1e-6, atol=1e-7)


def test_frozen_layers_are_bit_identical():
  params = _toy_params(2)
  grads_seq = [_random_grads(params, s) for s in range(4)]
  tx = optim.create_optimizer(_optim_config(base_lr=0.5, weight_decay=0.1),
                              params, ("upscore",), num_train_steps=4)
  new = _run(tx, params, grads_seq)
  assert np.array_equal(np.asarray(new["upscore"]["kernel"]),
                        params["upscore"]["kernel"])
  assert not np.array_equal(np.asarray(new["score_fr"]["kernel"]),
                            params["score_fr"]["kernel"])


def test_iter_size_applies_the_mean_gradient_once_per_k_batches():
  params = _toy_params(3)
  grads_seq = [_random_grads(params, s) for s in range(6)]
  config = _optim_config(base_lr=0.01, momentum=0.9, weight_decay=0.05,
                         iter_size=3)
  tx = optim.create_optimizer(config, params, ("upscore",),
                              num_train_steps=2)
  after_two = _run(tx, params, grads_seq[:2])
  for layer in params:
    for name in params[layer]:
      assert np.array_equal(np.asarray(after_two[layer][name]),
                            params[layer][name])
  got = _run(tx, params, grads_seq)
  mean_grads = [jax.tree_util.tree_map(lambda *g: np.mean(g, axis=0),
                                       *grads_seq[i:i + 3])
                for i in (0, 3)]
  want = _caffe_reference(params, mean_grads, lambda t: 0.01, 0.9, 0.05,
                          2.0, 0.0, {"upscore"})
  for layer in want:
    for name in want[layer]:
      np.testing.assert_allclose(np.asarray(got[layer][name]),
                                 want[layer][name], rtol=1e-5, atol=1e-6)


def test_schedules():
  config = _optim_config(base_lr=1.0, schedule="fixed")
  fn = optim.create_learning_rate_fn(config, 100)
  assert [float(fn(t)) for t in (0, 50, 99)] == [1.0, 1.0, 1.0]

  config = _optim_config(base_lr=2.0, schedule="poly", poly_power=0.9,
                         end_lr_factor=0.1, warmup_steps=10)
  fn = optim.create_learning_rate_fn(config, 110)
  np.testing.assert_allclose(float(fn(0)), 0.0)
  np.testing.assert_allclose(float(fn(5)), 1.0, rtol=1e-6)
  for t in (10, 40, 80, 110):
    want = (2.0 - 0.2) * (1 - (t - 10) / 100) ** 0.9 + 0.2
    np.testing.assert_allclose(float(fn(t)), want, rtol=1e-5)

  config = _optim_config(base_lr=1.0, schedule="cosine", end_lr_factor=0.0)
  fn = optim.create_learning_rate_fn(config, 100)
  for t in (0, 25, 50, 100):
    np.testing.assert_allclose(float(fn(t)),
                               0.5 * (1 + np.cos(np.pi * t / 100)),
                               atol=1e-6)

  with pytest.raises(ValueError, match="schedule"):
    optim.create_learning_rate_fn(_optim_config(schedule="step"), 10)


def test_reference_defaults_are_the_heavy_solver():
  config = default_config.get_config()
  assert config.optim.base_lr == 1e-10
  assert config.optim.momentum == 0.99
  assert config.optim.weight_decay == 5e-4
  assert config.optim.bias_lr_mult == 2.0
  assert config.optim.bias_decay_mult == 0.0
  assert config.optim.schedule == "fixed"
  assert config.optim.loss_normalization == "sum"
  assert config.batch_size == 1
  assert config.num_train_steps == 100_000
  assert config.eval_every_steps == 4000
