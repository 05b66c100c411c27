"""The CPU fast paths of fcn_jax.models.layers against independent references.

Tiled max pooling (forward and first-max gradient) against PyTorch's
``max_pool2d(ceil_mode=True)`` and its autograd; :class:`layers.PatchConv`
and :class:`layers.PaddedInputConv` against ``nn.Conv`` (values, variables
and gradients).
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
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, size, size + 1, 5)).astype(np.float32)
  conv = nn.Conv(6, (kernel, kernel), padding="VALID", name="fc6")
  patch = layers.PatchConv(6, kernel, name="fc6")
  variables = jax.jit(conv.init)(jax.random.key(2), x)
  # Same variable tree and the same initial values from the same key.
  jax.tree.map(np.testing.assert_array_equal, variables,
               jax.jit(patch.init)(jax.random.key(2), x))
  variables = jax.tree.map(
      lambda v: v + rng.normal(size=v.shape).astype(np.float32), variables)
  np.testing.assert_allclose(jax.jit(patch.apply)(variables, x),
                             jax.jit(conv.apply)(variables, x), rtol=1e-5,
                             atol=1e-4)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  got = jax.jit(jax.grad(loss(patch), argnums=(0, 1)))(variables, x)
  want = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(variables, x)
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


# (kernel, stride, input channels, as_matmul): VGG16's conv1_1 both ways,
# CaffeNet's conv1 and NYUD color-D's 4-channel conv1_1 as the CPU builds them.
FIRST_CONVS = [(3, 1, 3, False), (3, 1, 3, True), (11, 4, 3, False),
               (3, 1, 4, True)]


@pytest.mark.parametrize("kernel,stride,channels,as_matmul", FIRST_CONVS)
def test_padded_input_conv_equals_the_padded_convolution(kernel, stride,
                                                         channels, as_matmul):
  """Outputs whose window sees only the 100-pixel padding are the bias; the
  others, and every gradient, are nn.Conv's, at odd sizes, 1x1 and one side
  1, with the real padding."""
  conv = nn.Conv(5, (kernel, kernel), strides=(stride, stride), padding=100,
                 name="conv1_1")
  first = layers.PaddedInputConv(5, kernel, 100, stride, as_matmul=as_matmul,
                                 name="conv1_1")
  # The variables do not depend on the input's size: initialised once.
  x = np.zeros((2, 5, 3, channels), np.float32)
  variables = jax.jit(conv.init)(jax.random.key(2), x)
  jax.tree.map(np.testing.assert_array_equal, variables,
               jax.jit(first.init)(jax.random.key(2), x))
  # A non-zero bias: the skipped outputs must be exactly it.
  rng = np.random.default_rng(3)
  variables = jax.tree.map(
      lambda v: v + rng.normal(size=v.shape).astype(np.float32), variables)
  for height, width in [(1, 1), (1, 70), (37, 53), (5, 3), (64, 64)]:
    x = rng.normal(size=(2, height, width, channels)).astype(np.float32)
    want = jax.jit(conv.apply)(variables, x)
    got = jax.jit(first.apply)(variables, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    def loss(module):
      return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
    got = jax.jit(jax.grad(loss(first), argnums=(0, 1)))(variables, x)
    want = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b)))), got, want)


def test_first_convolution_skips_only_where_padding_exceeds_the_kernel():
  """VGG16's own geometry (pad 1) keeps nn.Conv; the FCNs' pad 100 uses
  PaddedInputConv, a matmul on the CPU only."""
  assert type(layers.input_conv(8, 3, 1, "conv1_1", jnp.float32)) is nn.Conv
  first = layers.input_conv(8, 3, 100, "conv1_1", jnp.float32)
  assert isinstance(first, layers.PaddedInputConv) and first.as_matmul
  alexnet = layers.input_conv(96, 11, 100, "conv1", jnp.float32, stride=4)
  assert isinstance(alexnet, layers.PaddedInputConv) and not alexnet.as_matmul
  with layers.target_platform("tpu"):
    first = layers.input_conv(8, 3, 100, "conv1_1", jnp.float32)
    assert isinstance(first, layers.PaddedInputConv) and not first.as_matmul
