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

# (bucket, sizes smaller than it): odd sizes, 1x1, one side 1, both
# orientations; buckets <= 80 px. (A bucket exactly the image's size masks
# nothing: test_without_sizes_nothing_is_masked.) Each batch also holds the
# first example unmasked (sizes = the bucket).
CASES = {
    "a": ((64, 72), [(37, 53)]),
    "b": ((48, 48), [(1, 1)]),
    "c": ((70, 40), [(1, 39)]),
    "d": ((66, 80), [(61, 1), (33, 77)]),
    "e": ((80, 80), [(1, 70), (61, 45)]),  # The CaffeNet check.
    "f": ((40, 40), [(23, 1)]),
    "g": ((56, 44), [(45, 31)]),
}
# Each net's case and layer forms. fc6/fc7 are nn.Conv (their form on GPUs
# and TPUs) except in fcn8s and FCN-AlexNet, which take the CPU's PatchConv:
# the same function (layers_test.py), three times the compile time here.
NET_CASES = {
    "fcn32s": ("a", {}), "fcn16s": ("b", {}),
    "fcn8s": ("d", {"platform": "cpu"}),
    "fcn8s_atonce": ("g", {}), "fcn_alexnet": ("e", {"platform": "cpu"}),
    "nyud_fcn32s_color": ("c", {}), "nyud_fcn32s_hha": ("f", {}),
    "nyud_fcn32s_color_d": ("a", {}), "nyud_fcn32s_color_hha": ("d", {}),
    "siftflow_fcn32s": ("f", {}), "siftflow_fcn16s": ("g", {}),
    "siftflow_fcn8s": ("d", {}),
    "pascalcontext_fcn32s": ("c", {}),
    "pascalcontext_fcn16s": ("b", {"upsample_mode": "depthwise"}),
    "pascalcontext_fcn8s": ("a", {}),
}


def _platform(name: str) -> str:
  return NET_CASES[name][1].get("platform", "gpu")


def test_every_net_has_a_case():
  assert set(NET_CASES) == set(models.NETS)


def _cached(function):
  """``functools.cache`` keyed by the full positional arguments, so that
  ``f(name)`` and ``f(name, "dense")`` share one entry (one compile)."""
  cached = functools.cache(function)
  return lambda name, upsample_mode="dense": cached(name, upsample_mode)


@_cached
def _net(name: str, upsample_mode: str):
  """``(model, variables)`` with random weights in every layer."""
  model = models.create_model(name, width_divisor=DIVISOR,
                              upsample_mode=upsample_mode)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), model.dummy_inputs(), train=False))["params"]
  rng = np.random.default_rng(0)
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


def _apply(model, v, x, sizes=None):
  """``(logits, blobs)``: every named blob of the net as well."""
  logits, state = model.apply(v, x, train=False, sizes=sizes,
                              mutable=["intermediates"])
  return logits, state["intermediates"]["blobs"][0]


@_cached
def _native(name: str, upsample_mode: str):
  model, _ = _net(name, upsample_mode)
  return jax.jit(functools.partial(_apply, model))


TRACES = {}


@_cached
def _masked(name: str, upsample_mode: str):
  model, _ = _net(name, upsample_mode)

  def forward(v, x, sizes):
    TRACES[name] = TRACES.get(name, 0) + 1  # Once per compiled shape.
    return _apply(model, v, x, sizes)
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
  assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g}, values {scale:.3g}"


def _check_net(name, upsample_mode="dense", case="a"):
  model, variables = _net(name, upsample_mode)
  bucket, sizes = CASES[case]
  rng = np.random.default_rng(1)
  examples, padded = _bucket_batch(model, rng, bucket, sizes + [bucket])
  # The last row is the first example's padded input without masks (the full
  # size masks nothing: the same logits as sizes=None, checked below).
  for plane in padded.values() if model.multi_input else [padded]:
    plane[-1] = plane[0]
  logits, blobs = _masked(name, upsample_mode)(
      variables, padded, np.array(sizes + [bucket], np.int32))
  masked = _per_head(model, logits)
  native = _native(name, upsample_mode)
  for i, ((h, w), example) in enumerate(zip(sizes, examples)):
    logits, native_blobs = native(variables, example)
    want = _per_head(model, logits)
    for head, logits in masked.items():
      _assert_close(logits[i, :h, :w], want[head][0], f"{name} {head} {h}x{w}")
      assert not logits[i, h:].any() and not logits[i, :, w:].any()
      if i == 0:  # Unmasked, the padding reaches it.
        err = np.abs(logits[-1, :h, :w] - want[head][0]).max()
        assert err > 1e-2 * np.abs(want[head]).max(), (name, head, err)
    # Every blob (pools, LRNs, fc7, scores, upsampled and cropped scores,
    # sums) inside the native blob's shape, the whole uncropped head included.
    for blob, value in native_blobs.items():
      bh, bw = value.shape[1:3]
      _assert_close(np.asarray(blobs[blob][i, :bh, :bw]), np.asarray(value[0]),
                    f"{name} {blob} of {h}x{w}")
    assert len(native_blobs) >= 7


@pytest.mark.parametrize("name", sorted(NET_CASES))
def test_masked_bucket_gives_native_logits(name):
  case, options = NET_CASES[name]
  mode = options.get("upsample_mode", "dense")
  with layers.target_platform(_platform(name)):
    _check_net(name, mode, case)


def test_extents_are_the_native_blob_shapes():
  # The size arithmetic against XLA's shapes of the native blobs.
  for name in ("fcn8s", "fcn_alexnet"):
    model, variables = _net(name)
    for h, w in [(1, 1), (1, 70), (2, 3), (31, 33), (37, 53), (64, 65)]:
      blobs = jax.eval_shape(lambda x: model.apply(
          variables, x, mutable=["intermediates"])[1],
          jnp.zeros((1, h, w, 3)))["intermediates"]["blobs"][0]
      extents = model.net.trunk_spec.extents()
      extents.update(model.head.extents(extents["fc7"]))
      compared = 0
      for blob, extent in extents.items():
        if blob in blobs:
          for sizes in (np.array([[h, w]]), jnp.array([[h, w]], jnp.int32)):
            assert tuple(blobs[blob].shape[1:3]) == tuple(
                np.asarray(extent(sizes))[0]), (name, blob, h, w)
          compared += 1
      assert compared >= (6 if name == "fcn_alexnet" else 8)


def test_traced_sizes_compile_once_per_bucket():
  name = "fcn32s"
  model, variables = _net(name)
  forward = _masked(name)
  x = _inputs(model, np.random.default_rng(2), 2, *CASES["a"][0])
  with layers.target_platform(_platform(name)):
    a = forward(variables, x, np.array([[37, 53], [64, 72]], np.int32))[0]
    traces = TRACES[name]
    b = forward(variables, x, np.array([[1, 1], [30, 17]], np.int32))[0]
  assert TRACES[name] == traces  # Other sizes, the same program.
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0


def test_without_sizes_nothing_is_masked():
  name = "fcn32s"
  model, variables = _net(name)
  bucket = CASES["a"][0]
  x = _inputs(model, np.random.default_rng(3), 2, *bucket)
  plain = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x)
  masked = jax.make_jaxpr(lambda v, x: model.apply(
      v, x, sizes=np.array([bucket] * 2, np.int32)))(variables, x)
  primitives = lambda j: {e.primitive.name for e in j.jaxpr.eqns}
  assert "iota" not in primitives(plain) and "iota" in primitives(masked)
  # The masks at the full size keep everything: the same logits, bit for bit
  # (and so a bucket exactly an image's size gives its native logits).
  with layers.target_platform(_platform(name)):
    full = _masked(name)(variables, x, np.array([bucket] * 2, np.int32))[0]
    plain = _native(name)(variables, x)[0]
  np.testing.assert_array_equal(np.asarray(full), np.asarray(plain))


@pytest.mark.parametrize("name,size", [("fcn16s", (37, 53)),
                                       ("fcn_alexnet", (1, 60))])
def test_gradients_of_valid_pixels_are_native(name, size):
  # The loss of training: cross-entropy summed over the valid pixels.
  model, variables = _net(name)
  (h, w), bucket = size, (52, 60)
  rng = np.random.default_rng(4)
  (example,), padded = _bucket_batch(model, rng, bucket, [size])
  labels = rng.integers(0, model.num_classes, (1,) + bucket)
  valid = np.zeros((1,) + bucket, bool)
  valid[0, :h, :w] = True

  def loss(params, x, labels, valid, sizes=None):
    logits = model.apply({"params": params}, x, sizes=sizes)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(jnp.where(valid, xent, 0.0))

  grad = jax.jit(jax.grad(loss))
  with layers.target_platform(_platform(name)):
    masked = grad(variables["params"], padded, labels, valid,
                  np.array([size], np.int32))
    native = grad(variables["params"], example, labels[:, :h, :w],
                  valid[:, :h, :w])
  for path, want in jax.tree_util.tree_leaves_with_path(native):
    got = _leaf(masked, path)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, jax.tree_util.keystr(path)


def _leaf(tree, path):
  for key in path:
    tree = tree[key.key]
  return np.asarray(tree)
