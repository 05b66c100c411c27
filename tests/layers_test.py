"""The CPU fast paths of fcn_jax.models.layers against independent references.

Tiled max pooling (forward and first-max gradient) against PyTorch's
``max_pool2d(ceil_mode=True)`` and its autograd; :class:`layers.PatchConv`
against ``nn.Conv`` (values, variables and gradients).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.models import layers

torch = pytest.importorskip(
    "torch", reason="the PyTorch reference needs the optional extra: "
    "pip install 'fcn_jax[torch]'")


def _torch_pool_and_grad(x, cotangent):
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  y = torch.nn.functional.max_pool2d(xt, 2, 2, ceil_mode=True)
  y.backward(torch.from_numpy(cotangent.transpose(0, 3, 1, 2).copy()))
  return (y.detach().numpy().transpose(0, 2, 3, 1),
          xt.grad.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (5, 2), (2, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_tiled_max_pool_matches_torch_values_and_gradient(height, width,
                                                          ties):
  rng = np.random.default_rng(height * 10 + width)
  x = rng.standard_normal((2, height, width, 3)).astype(np.float32)
  if ties:  # Many equal maxima per window: ReLU zeros and small integers.
    x = np.maximum(np.round(x), 0).astype(np.float32)
  y_shape = (2, -(-height // 2), -(-width // 2), 3)
  cotangent = rng.standard_normal(y_shape).astype(np.float32)
  want_y, want_grad = _torch_pool_and_grad(x, cotangent)
  y, vjp = jax.vjp(layers.max_pool_ceil, jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent))
  np.testing.assert_array_equal(np.asarray(y), want_y)
  np.testing.assert_array_equal(np.asarray(grad), want_grad)


def test_tiled_max_pool_equals_reduce_window_forward_in_bfloat16():
  x = jax.random.normal(jax.random.key(0), (1, 11, 6, 4), jnp.bfloat16)
  want = nn.max_pool(x, (2, 2), strides=(2, 2), padding=((0, 1), (0, 1)))
  got = layers.max_pool_ceil(x)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got, np.float32),
                                np.asarray(want, np.float32))


@pytest.mark.parametrize("kernel,size", [(7, 9), (1, 3), (3, 3)])
def test_patch_conv_equals_nn_conv(kernel, size):
  x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 5))
  conv = nn.Conv(6, (kernel, kernel), padding="VALID", name="fc6")
  patch = layers.PatchConv(6, kernel, name="fc6")
  variables = conv.init(jax.random.key(2), x)
  # Same variable tree and the same initial values from the same key.
  jax.tree.map(np.testing.assert_array_equal, variables,
               patch.init(jax.random.key(2), x))
  variables = jax.tree.map(
      lambda v: v + jax.random.normal(jax.random.key(3), v.shape), variables)
  np.testing.assert_allclose(patch.apply(variables, x),
                             conv.apply(variables, x), rtol=1e-5, atol=1e-4)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  got = jax.grad(loss(patch), argnums=(0, 1))(variables, x)
  want = jax.grad(loss(conv), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-4), got, want)


def test_fc_layers_follow_the_target_platform():
  """fc6/fc7 are PatchConv on the CPU only; a dry run for TPU chips traced on
  a CPU host builds what training on the TPU builds (nn.Conv)."""
  assert jax.default_backend() == "cpu"
  assert isinstance(layers.fc_conv(8, 7, "fc6", jnp.float32),
                    layers.PatchConv)
  with layers.target_platform("tpu"):
    assert type(layers.fc_conv(8, 7, "fc6", jnp.float32)) is nn.Conv
  assert isinstance(layers.fc_conv(8, 7, "fc6", jnp.float32),
                    layers.PatchConv)
