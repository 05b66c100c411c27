"""Masked padding: a padded (bucket) input with each example's true size gives
the native-size logits and gradients (``model.apply(..., sizes=...)``).

The expectation is always the same net run at the example's own size without
``sizes`` (the reference's way, checked against Caffe in models_test.py), with
random weights everywhere (score layers, biases, upsamplers and Scale layers
included, so that every path of the head contributes). The bucket is filled
with noise beyond each example, so nothing relies on the padding's value; and
the same padded input without masks must differ, so each test can fail.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fcn_jax import models
from fcn_jax.models import layers

DIVISOR = 64  # Channels only: the geometry is the reference's.
RTOL = 1e-5   # Of the largest logit (float32, another summation order).

# (bucket, odd sizes); the bucket's own size is always a further example.
# Odd sizes, 1x1, one side 1, both orientations; buckets <= 80 px.
CASES = {
    "a": ((64, 72), [(37, 53)]),
    "b": ((48, 48), [(1, 1), (45, 31)]),
    "c": ((70, 40), [(1, 39)]),
    "d": ((66, 80), [(61, 1), (33, 77)]),
    "e": ((80, 80), [(1, 70), (37, 53)]),  # The CaffeNet check.
}
NET_CASES = {
    "fcn32s": "a", "fcn16s": "b", "fcn8s": "d", "fcn8s_atonce": "c",
    "fcn_alexnet": "e",
    "nyud_fcn32s_color": "a", "nyud_fcn32s_hha": "c",
    "nyud_fcn32s_color_d": "b", "nyud_fcn32s_color_hha": "d",
    "siftflow_fcn32s": "c", "siftflow_fcn16s": "a", "siftflow_fcn8s": "d",
    "pascalcontext_fcn32s": "c", "pascalcontext_fcn16s": "a",
    "pascalcontext_fcn8s": "b",
}


def test_every_net_has_a_case():
  assert set(NET_CASES) == set(models.NETS)


@functools.lru_cache(maxsize=None)
def _net(name: str, upsample_mode: str = "dense", seed: int = 0):
  """``(model, variables)`` with random weights in every layer."""
  model = models.create_model(name, width_divisor=DIVISOR,
                              upsample_mode=upsample_mode)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), model.dummy_inputs(), train=False))["params"]
  rng = np.random.default_rng(seed)
  params = {}
  for layer, leaves in shapes.items():
    params[layer] = {}
    for leaf, shape in leaves.items():
      shape = shape.shape
      if leaf == "kernel":
        fan_in = np.prod(shape[:3])  # HWIO: taps times inputs.
        value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
      elif leaf == "bias":
        value = rng.normal(0, 0.1, shape)
      else:  # The at-once Scale constants: any value, so the skips matter.
        value = rng.normal(1, 0.5, shape)
      params[layer][leaf] = jnp.asarray(value, jnp.float32)
  return model, {"params": params}


def _inputs(model, rng, batch, height, width):
  """Random preprocessed inputs of the model's structure."""
  arrays = {name: rng.normal(0, 50, (batch, height, width, c)).astype(
      np.float32) for name, c in model.input_channels.items()}
  return arrays if model.multi_input else next(iter(arrays.values()))


def _per_head(model, logits):
  return {k: np.asarray(v) for k, v in model.per_head(logits).items()}


@functools.lru_cache(maxsize=None)
def _native(name: str, upsample_mode: str = "dense"):
  model, _ = _net(name, upsample_mode)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


TRACES = {}


@functools.lru_cache(maxsize=None)
def _masked(name: str, upsample_mode: str = "dense"):
  model, _ = _net(name, upsample_mode)

  def forward(v, x, sizes):
    TRACES[name] = TRACES.get(name, 0) + 1  # Once per compiled shape.
    return model.apply(v, x, train=False, sizes=sizes)
  return jax.jit(forward)


def _bucket_batch(model, rng, bucket, sizes):
  """The examples at their own sizes and padded with noise into one bucket."""
  examples = [_inputs(model, rng, 1, h, w) for h, w in sizes]
  padded = _inputs(model, rng, len(sizes), *bucket)  # Noise beyond the sizes.
  for i, (h, w) in enumerate(sizes):
    for name in padded if model.multi_input else [None]:
      plane = padded[name] if name else padded
      plane[i, :h, :w] = (examples[i][name] if name else examples[i])[0]
  return examples, padded


def _assert_close(got, want, what):
  scale = np.abs(want).max()
  err = np.abs(got - want).max()
  assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g}, logits {scale:.3g}"


def _check_net(name, upsample_mode="dense", case=None):
  model, variables = _net(name, upsample_mode)
  bucket, odd = CASES[case or NET_CASES[name]]
  sizes = odd + [bucket]
  rng = np.random.default_rng(1)
  examples, padded = _bucket_batch(model, rng, bucket, sizes)
  native = _native(name, upsample_mode)
  masked = _per_head(model, _masked(name, upsample_mode)(
      variables, padded, np.array(sizes, np.int32)))
  for i, ((h, w), example) in enumerate(zip(sizes, examples)):
    want = _per_head(model, native(variables, example))
    for head, logits in masked.items():
      _assert_close(logits[i, :h, :w], want[head][0], f"{name} {head} {h}x{w}")
      assert not logits[i, h:].any() and not logits[i, :, w:].any()
  # Without masks (the same padded input, sizes=None) the first example's
  # logits are not its native ones: the padding reaches it.
  unmasked = _per_head(model, native(variables, padded))
  h, w = sizes[0]
  want = _per_head(model, native(variables, examples[0]))
  for head, logits in unmasked.items():
    err = np.abs(logits[0, :h, :w] - want[head][0]).max()
    assert err > 1e-2 * np.abs(want[head]).max(), (name, head, err)


@pytest.mark.parametrize("name", sorted(NET_CASES))
def test_masked_bucket_gives_native_logits(name):
  _check_net(name)


@pytest.mark.parametrize("name,mode,platform", [
    ("fcn16s", "depthwise", "cpu"),   # DepthwiseConvTranspose upsamplers.
    ("fcn_alexnet", "dense", "gpu"),  # fc6/fc7 as nn.Conv, not PatchConv.
])
def test_masked_bucket_with_other_layer_forms(name, mode, platform):
  with layers.target_platform(platform):
    _masked.cache_clear()
    _native.cache_clear()
    try:
      _check_net(name, mode, case="b" if name == "fcn16s" else "e")
    finally:
      _masked.cache_clear()
      _native.cache_clear()


def test_extents_are_the_native_blob_shapes():
  # The size arithmetic against XLA's shapes of the native blobs.
  for name in ("fcn8s", "fcn_alexnet"):
    model, variables = _net(name)
    for h, w in [(1, 1), (1, 70), (2, 3), (31, 33), (37, 53), (64, 65)]:
      blobs = jax.eval_shape(lambda x: model.apply(
          variables, x, mutable=["intermediates"])[1],
          jnp.zeros((1, h, w, 3)))["intermediates"]["blobs"][0]
      extents = model.net.trunk_spec.extents(np.array([[h, w]]))
      extents.update(model.head.extents(extents["fc7"]))
      compared = 0
      for blob, extent in extents.items():
        if blob in blobs:
          assert tuple(blobs[blob].shape[1:3]) == tuple(
              np.asarray(extent)[0]), (name, blob, h, w)
          compared += 1
      assert compared >= (6 if name == "fcn_alexnet" else 8)


def test_traced_sizes_compile_once_per_bucket():
  name = "fcn8s"
  model, variables = _net(name)
  forward = _masked(name)
  rng = np.random.default_rng(2)
  before = TRACES.get(name, 0)
  x = _inputs(model, rng, 2, 48, 56)
  a = forward(variables, x, np.array([[37, 53], [48, 56]], np.int32))
  b = forward(variables, x, np.array([[1, 1], [30, 17]], np.int32))
  assert TRACES[name] - before <= 1  # 0 when an earlier test traced 48x56.
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0


def test_without_sizes_nothing_is_masked():
  name = "fcn8s"
  model, variables = _net(name)
  x = _inputs(model, np.random.default_rng(3), 2, 37, 53)
  plain = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x)
  masked = jax.make_jaxpr(lambda v, x: model.apply(v, x, sizes=np.array(
      [[37, 53], [5, 7]], np.int32)))(variables, x)
  primitives = lambda j: {e.primitive.name for e in j.jaxpr.eqns}
  assert "iota" not in primitives(plain) and "iota" in primitives(masked)
  # The masks at the full size keep everything: the same logits, bit for bit.
  full = _masked(name)(variables, x, np.array([[37, 53]] * 2, np.int32))
  np.testing.assert_array_equal(np.asarray(full),
                                np.asarray(_native(name)(variables, x)))


@pytest.mark.parametrize("name", ["fcn16s", "fcn_alexnet"])
def test_gradients_of_valid_pixels_are_native(name):
  model, variables = _net(name)
  classes = model.num_classes
  bucket, sizes = (52, 60), [(37, 53), (1, 60)]
  rng = np.random.default_rng(4)
  examples, padded = _bucket_batch(model, rng, bucket, sizes)
  labels = rng.integers(0, classes, (len(sizes),) + bucket)
  valid = np.zeros((len(sizes),) + bucket, bool)
  for i, (h, w) in enumerate(sizes):
    valid[i, :h, :w] = True

  def loss(params, x, labels, valid, sizes=None):
    logits = model.apply({"params": params}, x, sizes=sizes)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(jnp.where(valid, xent, 0.0))

  grad = jax.jit(jax.grad(loss))
  masked = grad(variables["params"], padded, labels, valid,
                np.array(sizes, np.int32))
  native = None
  for i, (h, w) in enumerate(sizes):
    g = grad(variables["params"], examples[i], labels[i:i + 1, :h, :w],
             valid[i:i + 1, :h, :w])
    native = g if native is None else jax.tree.map(np.add, native, g)
  unmasked = grad(variables["params"], padded, labels, valid)
  differs = 0
  for path, want in jax.tree_util.tree_leaves_with_path(native):
    got = _leaf(masked, path)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, jax.tree_util.keystr(path)
    differs += np.abs(_leaf(unmasked, path) - want).max() > 1e-2 * scale
  assert differs > len(jax.tree.leaves(native)) // 2


def _leaf(tree, path):
  for key in path:
    tree = tree[key.key]
  return np.asarray(tree)
