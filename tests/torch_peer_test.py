"""The PyTorch peer of the benchmarks computes the same function as fcn_jax.

Given the same (random) weights, the PyTorch FCN of ``benchmarks/torch_fcn.py``
returns the same logits as the fcn_jax model, and the PyTorch train step of
``benchmarks/torch_bench.py`` makes the same update as fcn_jax's, so the speed
comparison is between two implementations of one computation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the PyTorch peer needs the optional extra: "
    "pip install 'fcn_jax[torch]'")

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common
from benchmarks import jax_bench
from benchmarks import torch_bench
from benchmarks import torch_fcn
from fcn_jax import models
from fcn_jax import parallel

NUM_CLASSES = 5
WIDTH_DIVISOR = 16


def _random_variables(model, seed):
  """He-scaled random values for every parameter, upsamplers included.

  The upsamplers get random, asymmetric kernels (not the symmetric bilinear
  ones) so that a wrong flip or transposition of their layout would show.
  """
  shapes = jax.eval_shape(lambda: models.init_variables(model))
  rng = np.random.RandomState(seed)
  fan_in = lambda shape: max(1, int(np.prod(shape[:-1])))
  return jax.tree_util.tree_map(
      lambda leaf: (rng.randn(*leaf.shape) * np.sqrt(
          2.0 / fan_in(leaf.shape))).astype(np.float32), shapes)


def _logits(name, upsample_mode, torch_mode, variables=None, seed=0):
  """Both frameworks' logits on the same random inputs, the heads' channels
  concatenated."""
  model = models.create_model(name, NUM_CLASSES, width_divisor=WIDTH_DIVISOR,
                              upsample_mode=upsample_mode)
  if variables is None:
    variables = _random_variables(model, seed)
  rng = np.random.RandomState(seed + 1)
  images = {n: rng.normal(0, 50, (2, 37, 45, c)).astype(np.float32)
            for n, c in model.input_channels.items()}
  if not model.multi_input:
    images = next(iter(images.values()))
  want = model.per_head(jax.jit(model.apply)(variables, images))
  net = torch_fcn.TorchFCN(name, NUM_CLASSES, WIDTH_DIVISOR,
                           upsample_mode=torch_mode).eval()
  torch_fcn.load_flax_variables(net, variables)
  with torch.no_grad():
    got = model.per_head(net(jax.tree.map(
        lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), images)))
  got = np.concatenate([got[h].numpy().transpose(0, 2, 3, 1) for h in want],
                       -1)
  return got, np.concatenate([np.asarray(want[h]) for h in want], -1)


def _relative_error(got, want):
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# The VOC nets and one of each other structure (the NYUD color/HHA and
# PASCAL-Context nets are VOC graphs with other class counts).
@pytest.mark.parametrize("name", (
    "fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet",
    "nyud_fcn32s_color_d", "nyud_fcn32s_color_hha", "siftflow_fcn16s"))
def test_same_logits_as_fcn_jax(name):
  got, want = _logits(name, "dense", "dense")
  classes = models.create_model(name, NUM_CLASSES).head_classes
  assert got.shape == want.shape == (2, 37, 45, sum(classes.values()))
  assert np.max(np.abs(want)) > 0
  assert _relative_error(got, want) < 1e-4


@pytest.mark.parametrize("jax_mode,torch_mode", [("depthwise", "depthwise"),
                                                 ("depthwise", "dense")])
def test_depthwise_upsampling_matches(jax_mode, torch_mode):
  got, want = _logits("fcn8s", jax_mode, torch_mode)
  assert _relative_error(got, want) < 1e-4


def test_bilinear_dense_weights_load_into_depthwise_torch():
  # The real (diagonal, bilinear) upsamplers of a dense fcn_jax model.
  model = models.create_model("fcn16s", NUM_CLASSES,
                              width_divisor=WIDTH_DIVISOR)
  variables = _random_variables(model, seed=3)
  params = dict(variables["params"])
  for layer in model.frozen_layers():
    size = params[layer]["kernel"].shape[0]
    params[layer] = {"kernel": models.bilinear_kernel(size, NUM_CLASSES)}
  got, want = _logits("fcn16s", "dense", "depthwise", {"params": params})
  assert _relative_error(got, want) < 1e-4


def test_dense_kernel_with_off_diagonal_cannot_be_depthwise():
  model = models.create_model("fcn32s", NUM_CLASSES,
                              width_divisor=WIDTH_DIVISOR)
  variables = _random_variables(model, seed=4)
  net = torch_fcn.TorchFCN("fcn32s", NUM_CLASSES, WIDTH_DIVISOR,
                           upsample_mode="depthwise")
  with pytest.raises(ValueError, match="off-diagonal"):
    torch_fcn.load_flax_variables(net, variables)


# docs/reference.md §10: (trainable, fixed) parameters with 21 classes.
@pytest.mark.parametrize("name,trainable,frozen", [
    ("fcn32s", 134_346_581, 1_806_336), ("fcn8s", 134_362_751, 127_008),
    ("fcn8s_atonce", 134_362_751, 127_776),
    ("fcn_alexnet", 56_954_261, 1_750_329)])
def test_torch_net_has_the_spec_parameters(name, trainable, frozen):
  net = torch_fcn.TorchFCN(name)
  names = {n.split(".")[1] for n, _ in net.named_parameters()}
  assert names == set(models.create_model(name).layer_names())
  count = lambda grad: sum(p.numel() for p in net.parameters()
                           if p.requires_grad == grad)
  assert (count(True), count(False)) == (trainable, frozen)


def _torch_to_hwio(net):
  """The trainable kernels and biases of ``net`` in fcn_jax's layout."""
  convs = dict(net.trunk.items()) | dict(net.score.items())
  return {name: {"kernel": conv.weight.detach().numpy().transpose(
      2, 3, 1, 0).copy(), "bias": conv.bias.detach().numpy().copy()}
          for name, conv in convs.items()}


def test_torch_train_step_does_the_update_of_fcn_jax():
  row = common.Row("fcn8s", 40, "float32", "dense", 2,
                   width_divisor=WIDTH_DIVISOR)
  config = jax_bench.train_config(row, learning_rate=1e-3)
  config.model.dropout_rate = 0.0  # The same function on both sides.
  config.optim.weight_decay = 0.05  # Large enough for a wrong decay to show.
  state, step, _ = jax_bench.create_train_step(config)
  initial = jax.tree_util.tree_map(np.array, state.params)
  net = torch_fcn.TorchFCN("fcn8s", width_divisor=WIDTH_DIVISOR).eval()
  torch_fcn.load_flax_variables(net, {"params": initial})
  torch_initial = _torch_to_hwio(net)
  upsamplers = {n: m.weight.detach().clone() for n, m in net.upsample.items()}
  optimizer = torch_bench.caffe_sgd(net, config.optim)
  images = common.random_images(2, 40)
  labels = common.random_labels(2, 40)
  batch = parallel.shard({"image": images, "label": labels}, 1)
  torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  torch_labels = torch.from_numpy(labels).long()

  for _ in range(2):  # The second step uses the momentum.
    state, metrics = step(state, batch)
    loss = torch_bench.pixel_loss(net(torch_images), torch_labels,
                                  config.optim.loss_normalization)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    np.testing.assert_allclose(loss.item(), float(metrics["loss"]),
                               rtol=1e-4)

  torch_final = _torch_to_hwio(net)
  for layer, leaves in torch_final.items():
    for leaf, value in leaves.items():
      want = np.asarray(state.params[layer][leaf]) - initial[layer][leaf]
      got = value - torch_initial[layer][leaf]
      assert np.max(np.abs(want)) > 0, f"{layer}/{leaf} did not change"
      assert _relative_error(got, want) < 1e-3, f"{layer}/{leaf}"
  for name, deconv in net.upsample.items():
    assert torch.equal(deconv.weight, upsamplers[name]), name
