"""Depthwise upsampling is the same function as the dense (diagonal) one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import errors
from fcn_jax import models


def _caffe_deconvolution(x: np.ndarray, caffe_kernel: np.ndarray,
                         stride: int) -> np.ndarray:
  """Naive per-channel Caffe Deconvolution (pad 0): scatter every input pixel.

  Args:
    x: ``[N, H, W, C]``.
    caffe_kernel: ``[k, k, C]`` in Caffe orientation (not flipped).
    stride: Stride.

  Returns:
    ``[N, s*(H-1)+k, s*(W-1)+k, C]``.
  """
  n, h, w, c = x.shape
  k = caffe_kernel.shape[0]
  out = np.zeros((n, stride * (h - 1) + k, stride * (w - 1) + k, c))
  for i in range(h):
    for j in range(w):
      out[:, i * stride:i * stride + k, j * stride:j * stride + k] += (
          x[:, i, j, None, None, :] * caffe_kernel[None])
  return out


def _apply_depthwise(kernel: np.ndarray, stride: int, x: np.ndarray,
                     dtype=jnp.float32) -> jax.Array:
  module = models.DepthwiseConvTranspose(kernel.shape[0], stride,
                                         nn.initializers.zeros, dtype)
  return module.apply({"params": {"kernel": jnp.asarray(kernel)}},
                      jnp.asarray(x))


def _diagonal_to_dense(kernel: np.ndarray) -> np.ndarray:
  k, _, _, c = kernel.shape
  dense = np.zeros((k, k, c, c), kernel.dtype)
  dense[:, :, np.arange(c), np.arange(c)] = kernel[:, :, 0, :]
  return dense


# (kernel, stride): the FCN-VGG upsamplers, FCN-AlexNet's k63, and k % s != 0.
CASES = [(4, 2), (16, 8), (32, 16), (64, 32), (63, 32), (5, 2)]


@pytest.mark.parametrize("kernel_size,stride", CASES)
def test_matches_a_naive_caffe_deconvolution(kernel_size, stride):
  rng = np.random.RandomState(kernel_size)
  x = rng.randn(2, 3, 4, 3).astype(np.float32)
  caffe_kernel = rng.randn(kernel_size, kernel_size, 3).astype(np.float32)
  # fcn_jax stores the spatially flipped Caffe kernel (docs/reference.md §4.3).
  stored = caffe_kernel[::-1, ::-1, None, :]
  got = _apply_depthwise(stored, stride, x)
  want = _caffe_deconvolution(x, caffe_kernel, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kernel_size,stride", CASES[:5])
def test_matches_dense_conv_transpose_with_the_diagonal(kernel_size, stride):
  rng = np.random.RandomState(stride)
  channels = 5
  x = rng.randn(1, 4, 3, channels).astype(np.float32)
  kernel = rng.randn(kernel_size, kernel_size, 1, channels).astype(np.float32)
  dense = nn.ConvTranspose(channels, (kernel_size, kernel_size),
                           (stride, stride), padding="VALID", use_bias=False)
  want = dense.apply({"params": {"kernel": _diagonal_to_dense(kernel)}}, x)
  got = _apply_depthwise(kernel, stride, x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

  # Gradients with respect to the input agree too (training backpropagates
  # through the frozen upsamplers).
  cotangent = rng.randn(*want.shape).astype(np.float32)
  grad_dense = jax.grad(lambda v: jnp.sum(dense.apply(
      {"params": {"kernel": _diagonal_to_dense(kernel)}}, v) * cotangent))(x)
  grad_depthwise = jax.grad(lambda v: jnp.sum(
      _apply_depthwise(kernel, stride, v) * cotangent))(x)
  np.testing.assert_allclose(grad_depthwise, grad_dense, atol=1e-4,
                             rtol=1e-5)


def test_bfloat16_computation_returns_bfloat16_close_to_float32():
  rng = np.random.RandomState(0)
  x = rng.randn(1, 6, 6, 3).astype(np.float32)
  kernel = models.bilinear_kernel(16, 3)[:, :, [0, 1, 2], [0, 1, 2]][:, :,
                                                                     None]
  full = _apply_depthwise(kernel, 8, x)
  half = _apply_depthwise(kernel, 8, x, jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), full, atol=0.05,
                             rtol=0.02)


def _randomise(params, seed=0):
  """He-scaled random values for every parameter (score layers start at 0)."""
  rng = np.random.RandomState(seed)
  fan_in = lambda shape: max(1, int(np.prod(shape[:-1])))
  return jax.tree_util.tree_map(
      lambda leaf: (rng.randn(*leaf.shape) * np.sqrt(
          2.0 / fan_in(leaf.shape))).astype(np.float32), params)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s_atonce"])
def test_depthwise_model_matches_dense_model(name):
  options = dict(num_classes=4, width_divisor=16)
  dense = models.create_model(name, **options)
  depthwise = models.create_model(name, upsample_mode="depthwise", **options)
  shapes = jax.eval_shape(lambda: models.init_variables(depthwise))
  dw_params = _randomise(shapes["params"])
  dense_params = dict(dw_params)
  upsamplers = [s.upsampler.name for s in dense.head.skips]
  upsamplers.append(dense.head.final.name)
  for layer in upsamplers:
    dense_params[layer] = {"kernel": jnp.asarray(_diagonal_to_dense(
        np.asarray(dw_params[layer]["kernel"])))}
  x = jnp.asarray(np.random.RandomState(1).randn(2, 37, 45, 3), jnp.float32)
  want = jax.jit(dense.apply)({"params": dense_params}, x)
  got = jax.jit(depthwise.apply)({"params": dw_params}, x)
  assert got.shape == (2, 37, 45, 4)
  scale = float(jnp.max(jnp.abs(want)))
  assert scale > 0
  np.testing.assert_allclose(got / scale, want / scale, atol=1e-5)


def test_depthwise_kernels_have_the_spec_parameter_counts():
  # docs/reference.md §10: a depthwise upsampler holds 21*k*k weights.
  expected = {"upscore": 86_016, "upscore16": 21_504, "upscore8": 5_376,
              "upscore2": 336, "upscore_pool4": 336}
  for name in ("fcn32s", "fcn16s", "fcn8s"):
    model = models.create_model(name, upsample_mode="depthwise")
    shapes = jax.eval_shape(lambda m=model: models.init_variables(m))
    params = shapes["params"]
    for layer in model.frozen_layers():
      kernel = params[layer]["kernel"]
      assert kernel.shape[2] == 1
      assert np.prod(kernel.shape) == expected[layer]
  dense = models.create_model("fcn8s")
  assert dense.upsample_mode == "dense"  # The default keeps Caffe's layout.


def test_unknown_upsample_mode_is_rejected():
  with pytest.raises(errors.UserError, match="upsample_mode"):
    models.create_model("fcn8s", upsample_mode="bilinear")
