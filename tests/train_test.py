"""Train/eval steps on 8 fake CPU devices, checkpoints and init_from."""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import checkpointing
from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax.models import losses
from fcn_jax import models
from fcn_jax.training import optim
from fcn_jax import parallel
from fcn_jax.data import preprocessing
from fcn_jax.evaluation import evaluator
from fcn_jax.training import loop
from fcn_jax import run_config
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib
from fcn_jax.models import weights
from tests import helpers
from tests.tiny_fcn import random_variables

NUM_CLASSES = 4
IMAGE_SIZE = 32
GLOBAL_BATCH = 8


def _config(model_name="fcn8s", **optim_overrides):
  config = default_config.get_config()
  config.model.name = model_name
  config.model.num_classes = NUM_CLASSES
  config.model.width_divisor = 64
  config.model.dropout_rate = 0.0  # Per-device dropout keys differ.
  config.optim.base_lr = 1e-3
  config.optim.momentum = 0.9
  for key, value in optim_overrides.items():
    setattr(config.optim, key, value)
  return config


def _batch(seed=0, batch=GLOBAL_BATCH):
  rng = np.random.default_rng(seed)
  shape = (batch, IMAGE_SIZE, IMAGE_SIZE)
  labels = rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)
  labels[rng.random(shape) < 0.3] = 255
  labels[0] = 255  # One image without any valid pixel.
  images = (rng.normal(size=shape + (3,)) * 40).astype(np.float32)
  return {"image": images, "label": labels}


def _train(config, num_devices, batches):
  """Runs train_step data-parallel on the first ``num_devices`` devices."""
  model = run_config.model_spec(config).create()
  params = random_variables(model, kernel_gain=1.0, bias_std=0.0)["params"]
  tx = optim.create_optimizer(config.optim, params, model.frozen_layers(),
                              num_train_steps=len(batches))
  devices = jax.local_devices()[:num_devices]
  step = parallel.replicate_step(
      functools.partial(step_lib.train_step, model=model, tx=tx,
                        loss_normalization=config.optim.loss_normalization),
      devices, per_device_outputs=(False, False))
  state = parallel.replicate(
      state_lib.create_train_state(params, tx, jax.random.PRNGKey(1)), devices)
  step_metrics = []
  for batch in batches:
    state, m = step(state, parallel.shard(batch, num_devices))
    step_metrics.append(jax.device_get(m))
  return model, params, parallel.to_host(state.to_dict()), step_metrics


@pytest.fixture(scope="module", params=["valid", "sum"])
def runs(request):
  config = _config(loss_normalization=request.param)
  batches = [_batch(seed) for seed in range(2)]
  model, params0, state8, metrics8 = _train(config, 8, batches)
  _, _, state1, metrics1 = _train(config, 1, batches)
  return dict(normalization=request.param, model=model, params0=params0,
              state8=state8, state1=state1, metrics8=metrics8,
              metrics1=metrics1, batches=batches)


def test_eight_devices_equal_one_device(runs):
  assert jax.device_count() == 8
  p8, p1 = runs["state8"]["params"], runs["state1"]["params"]
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p8),
                          jax.tree_util.tree_leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # Training actually moved the parameters.
  moved = [not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(p8),
      jax.tree_util.tree_leaves(runs["params0"]))]
  assert sum(moved) > 10
  # float32 rounding: the 8-device program sums its pixels in another order
  # (seen 2.5e-6 relative under the tuned XLA:CPU flags); a wrong normaliser
  # would be off by a factor near 8.
  for m8, m1 in zip(runs["metrics8"], runs["metrics1"]):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  assert int(runs["state8"]["step"]) == 2


def test_reported_loss_is_the_global_batch_loss(runs):
  """Step 1 loss equals the loss of the whole batch at the initial params."""
  model, batch = runs["model"], runs["batches"][0]
  logits = helpers.jit_apply(model, {"params": runs["params0"]}, jnp.asarray(batch["image"]))
  want = losses.segmentation_loss(logits, jnp.asarray(batch["label"]),
                                  normalization=runs["normalization"])
  # The eager forward pass runs each convolution as its own program: float32
  # rounding of 2.6e-5 relative was seen under the tuned XLA:CPU flags.
  np.testing.assert_allclose(runs["metrics8"][0]["loss"], float(want),
                             rtol=1e-4)
  assert runs["metrics8"][0]["valid_pixels"] == np.sum(batch["label"] != 255)


def test_frozen_layers_are_bit_identical_after_training(runs):
  frozen = runs["model"].frozen_layers()
  assert set(frozen) == {"upscore2", "upscore_pool4", "upscore8"}
  for layer in frozen:
    for name, value in runs["params0"][layer].items():
      assert np.array_equal(runs["state8"]["params"][layer][name],
                            np.asarray(value)), layer


def test_eval_step_counts_only_valid_pixels_of_valid_examples():
  config = _config("fcn32s")
  model = run_config.model_spec(config).create()
  rng = np.random.default_rng(3)
  params = random_variables(model, kernel_gain=1.0, bias_std=0.0)["params"]
  # Non-zero scores, so predictions vary.
  params["score_fr"]["kernel"] = rng.normal(
      size=params["score_fr"]["kernel"].shape).astype(np.float32)
  batch = _batch(seed=4)
  batch["valid"] = np.array([True] * 6 + [False] * 2)
  p_eval, devices = evaluator.make_eval_fn(model, helpers.resolved(config))
  assert len(devices) == 1  # eval_batch_size 1 -> one device.
  config.eval_batch_size = 8
  p_eval, devices = evaluator.make_eval_fn(model, helpers.resolved(config))
  assert len(devices) == 8
  totals, predictions = p_eval(params, parallel.shard(batch, 8))
  predictions = parallel.unshard(predictions)

  logits = np.asarray(helpers.jit_apply(model, {"params": params},
                                  jnp.asarray(batch["image"])))
  np.testing.assert_array_equal(predictions, logits.argmax(-1))
  want = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  loss_sum = 0.0
  for i in range(6):
    for a, b in zip(batch["label"][i].ravel(), predictions[i].ravel()):
      if a != 255:
        want[a, b] += 1
    loss_sum += float(losses.segmentation_loss(
        jnp.asarray(logits[i:i + 1]), jnp.asarray(batch["label"][i:i + 1])))
  np.testing.assert_array_equal(np.asarray(totals["confusion"]), want)
  assert int(totals["num_images"]) == 6
  np.testing.assert_allclose(float(totals["loss_sum"]), loss_sum, rtol=1e-5)

  results, tiles = evaluator.evaluate(
      p_eval, devices, params, [batch], num_classes=NUM_CLASSES,
      preprocessing=preprocessing.CAFFE_VGG, num_tiles=2)
  assert results["num_images"] == 6
  np.testing.assert_allclose(results["pixel_acc"],
                             np.trace(want) / want.sum())
  np.testing.assert_allclose(results["loss"], loss_sum / 6, rtol=1e-5)
  assert len(tiles) == 2 and tiles[0].shape == (32, 3 * 32 + 8, 3)


def _save_checkpoint(workdir, config, params, step, metrics=None):
  model = run_config.model_spec(config).create()
  tx = optim.create_optimizer(config.optim, params, model.frozen_layers(), 10)
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  state = state.replace(step=jnp.asarray(step, jnp.int32))
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=2,
                                            keep_best=1)
  checkpointer.save(step, parallel.to_host(state.to_dict()),
                    metadata=checkpointing.make_metadata(
                        run_config.model_spec(config), preprocessing.CAFFE_VGG),
                    metrics=metrics)
  checkpointer.wait()
  checkpointer.close()


def test_checkpoints_keep_latest_and_best(tmp_path):
  config = _config("fcn32s")
  model = run_config.model_spec(config).create()
  params = random_variables(model)["params"]
  for step, mean_iu in [(1, 0.5), (2, None), (3, 0.2), (4, 0.3), (5, None)]:
    _save_checkpoint(str(tmp_path), config, params, step,
                     None if mean_iu is None else {"mean_iu": mean_iu})
  checkpointer = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  assert checkpointer.all_steps() == [1, 4, 5]
  assert checkpointer.best_step() == 1
  assert checkpointer.latest_step() == 5
  checkpointer.close()


def test_scratch_init_is_he_normal_per_trunk_layer_in_one_program():
  """Without init_from, each conv/fc kernel is He-normal (std sqrt(2/fan_in)),
  drawn layer by layer from fold_in(rng, index of the layer in sorted order),
  the rest as the reference starts it (zero biases and score layers, bilinear
  upsamplers): initial_params computes it as one compiled program; here each
  draw is made on its own, eagerly."""
  model = models.create_model("fcn_alexnet", NUM_CLASSES, width_divisor=16)
  rng = jax.random.PRNGKey(3)
  got, metadata = state_lib.initial_params(model, rng, {}, "he_normal")
  assert metadata is None
  he_normal = jax.nn.initializers.he_normal(in_axis=(0, 1, 2), out_axis=3)
  shapes = models.param_shapes(model)
  assert set(got) == set(shapes)
  redrawn = 0
  for index, layer in enumerate(sorted(shapes)):
    leaves = {name: s.shape for name, s in shapes[layer].items()}
    if layer.startswith(("conv", "fc")):
      want = {"kernel": he_normal(jax.random.fold_in(rng, index),
                                  leaves["kernel"]),
              "bias": np.zeros(leaves["bias"], np.float32)}
      fan_in = math.prod(leaves["kernel"][:3])
      assert np.std(want["kernel"]) == pytest.approx(math.sqrt(2 / fan_in),
                                                     rel=0.2)
      redrawn += 1
    elif layer in model.frozen_layers():
      want = model.reference_init(layer, leaves)[0]
    else:  # Score layers.
      want = {name: np.zeros(shape, np.float32)
              for name, shape in leaves.items()}
    for name, value in want.items():
      np.testing.assert_array_equal(got[layer][name], value,
                                    err_msg=f"{layer}/{name}")
  assert redrawn == 7  # conv1-5, fc6, fc7.
  # "flax_default" keeps the model's own init: nothing re-drawn.
  assert state_lib.scratch_init(got, "flax_default", rng) is got


def test_init_from_a_fcn32s_checkpoint_stages_fcn16s(tmp_path):
  source_config = _config("fcn32s")
  source_model = run_config.model_spec(source_config).create()
  rng = np.random.default_rng(0)
  source_params = jax.tree_util.tree_map(
      lambda x: rng.normal(size=x.shape).astype(np.float32),
      models.param_shapes(source_model))
  _save_checkpoint(str(tmp_path), source_config, source_params, 7,
                   {"mean_iu": 0.1})

  for path in (str(tmp_path), os.path.join(str(tmp_path), "checkpoints", "7")):
    bundle = checkpointing.load(path)
    model, variables, prep, metadata = (bundle.model, bundle.variables,
                                        bundle.preprocessing, bundle.metadata)
    assert model.head == models.HEADS["fcn32s"]
    assert model.width_divisor == 64 and model.num_classes == NUM_CLASSES
    assert prep.matches(preprocessing.CAFFE_VGG)
    assert metadata["model"] == "fcn32s"
    for a, b in zip(jax.tree_util.tree_leaves(variables["params"]),
                    jax.tree_util.tree_leaves(source_params)):
      np.testing.assert_array_equal(a, b)

  config = _config("fcn16s")
  config.init_from = str(tmp_path)
  target_model = run_config.model_spec(config).create()
  params, metadata = state_lib.initial_params(
      target_model, jax.random.PRNGKey(5), {"": config.init_from}, "he_normal")
  assert metadata["model"] == "fcn32s"
  for layer in source_params:
    if layer == "upscore":
      continue
    for name in source_params[layer]:
      np.testing.assert_array_equal(np.asarray(params[layer][name]),
                                    source_params[layer][name])
  assert not np.any(np.asarray(params["score_pool4"]["kernel"]))
  np.testing.assert_array_equal(np.asarray(params["upscore16"]["kernel"]),
                                models.bilinear_kernel(32, NUM_CLASSES))
  assert "upscore" not in params


def test_depthwise_upsampling_stages_from_dense_and_round_trips(tmp_path):
  source_config = _config("fcn16s")
  source_model = run_config.model_spec(source_config).create()
  source_params = random_variables(source_model, seed=3)["params"]
  _save_checkpoint(str(tmp_path / "dense"), source_config, source_params, 1)

  config = _config("fcn8s")
  config.model.upsample_mode = "depthwise"
  config.init_from = str(tmp_path / "dense")
  model = run_config.model_spec(config).create()
  assert model.upsample_mode == "depthwise"
  params, _ = state_lib.initial_params(
      model, jax.random.PRNGKey(5), {"": config.init_from}, "he_normal")
  c = NUM_CLASSES
  dense_upscore2 = np.asarray(source_params["upscore2"]["kernel"])
  np.testing.assert_array_equal(
      np.asarray(params["upscore2"]["kernel"])[:, :, 0, :],
      dense_upscore2[:, :, np.arange(c), np.arange(c)])

  # The same function as the dense FCN-8s holding the same weights.
  dense_config = _config("fcn8s")
  dense_model = run_config.model_spec(dense_config).create()
  dense_params, _ = weights.copy_by_name(
      params, random_variables(dense_model)["params"])
  assert np.asarray(dense_params["upscore8"]["kernel"]).shape == (16, 16, c, c)
  x = np.random.default_rng(0).normal(size=(1, 37, 45, 3)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(helpers.jit_apply(model, {"params": params}, x)),
      np.asarray(helpers.jit_apply(dense_model, {"params": dense_params}, x)),
      rtol=1e-5, atol=1e-5)

  # A depthwise checkpoint rebuilds a depthwise model.
  _save_checkpoint(str(tmp_path / "depthwise"), config, params, 2)
  bundle = checkpointing.load(str(tmp_path / "depthwise"))
  loaded, variables, metadata = (bundle.model, bundle.variables,
                                 bundle.metadata)
  assert metadata["model_options"]["upsample_mode"] == "depthwise"
  assert loaded.upsample_mode == "depthwise"
  np.testing.assert_array_equal(variables["params"]["upscore8"]["kernel"],
                                np.asarray(params["upscore8"]["kernel"]))


def test_non_finite_loss_names_the_step(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  pending = [(11, {"loss": jnp.float32(1.0)}),
             (12, {"loss": jnp.float32(math.nan)}),
             (13, {"loss": jnp.float32(math.inf)})]
  with pytest.raises(loop.NonFiniteLossError, match="at step 12"):
    loop._check_finite(pending, checkpointer)
  assert loop._check_finite(pending[:1], checkpointer) == [1.0]
  checkpointer.close()


def test_config_validation_names_the_field():
  config = _config()
  config.optim.loss_normalization = "mean"
  with pytest.raises(errors.UserError, match="loss_normalization"):
    run_config.validate_config(config)
  config = _config()
  config.mode = "predict"
  with pytest.raises(ValueError, match="config.mode"):
    run_config.validate_config(config)
  config = _config()
  config.optim.class_weights = (1.0, 2.0)
  with pytest.raises(ValueError, match="class_weights"):
    run_config.validate_config(config)


# --------------------------------------------------------------------------
# The training loop on synthetic data.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _loop_config(data_dir, num_train_steps):
  config = default_config.get_config()
  config.mode = "train"
  config.model.name = "fcn_alexnet"  # Not the subject: the quickest compile.
  config.model.width_divisor = 64  # Dropout stays on: its keys must resume.
  config.dataset.name = "synthetic_shapes/tiny"
  config.dataset.data_dir = data_dir
  config.dataset.train_split = "synthetic_train"
  config.dataset.eval_split = "synthetic_val"
  config.preprocessing = "torchvision"
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = num_train_steps
  config.log_every_steps = 1
  config.checkpoint.every_steps = 1
  config.input.train_mode = "epochs"
  config.input.crop_size = 32
  config.input.random_mirror = True
  config.input.scale_range = (0.75, 1.25)
  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-2
  config.optim.momentum = 0.9
  return config


def test_resumed_run_equals_uninterrupted_run(data_dir, tmp_path):
  full = loop.train_and_evaluate(_loop_config(data_dir, 3),
                                  str(tmp_path / "full"))
  loop.train_and_evaluate(_loop_config(data_dir, 1), str(tmp_path / "split"))
  resumed = loop.train_and_evaluate(_loop_config(data_dir, 3),
                                     str(tmp_path / "split"))
  assert int(full.step) == int(resumed.step) == 3
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(parallel.to_host(full.params)),
      jax.tree_util.tree_leaves(parallel.to_host(resumed.params))):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  moved = parallel.to_host(full.params)["fc6"]["kernel"]
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "split"),
                                            read_only=True)
  assert checkpointer.all_steps() == [2, 3]  # max_to_keep 2.
  earlier, _ = checkpointer.restore_params(2)
  checkpointer.close()
  assert not np.array_equal(earlier["fc6"]["kernel"], moved)


def test_non_finite_loss_sets_aside_the_checkpoint_it_came_from(
    data_dir, tmp_path):
  config = _loop_config(data_dir, 5)
  # The first update makes FCN-32s' parameters huge but finite; the loss of
  # the next step, computed from them, is not.
  config.model.name = "fcn32s"
  config.optim.base_lr = 1e30
  workdir = tmp_path / "nan"
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train_and_evaluate(config, str(workdir))
  import re  # pylint: disable=g-import-not-at-top
  bad, aside, path = re.search(
      r"at step (\d+)\..*checkpoint of step (\d+), which leads to it, is set "
      r"aside as (\S+);", str(error.value)).groups()
  assert int(aside) == int(bad) - 1
  assert path == str(workdir / "checkpoints" / f"{aside}.diverged")
  assert (workdir / "checkpoints" / f"{aside}.diverged" / "params").is_dir()
  checkpointer = checkpointing.Checkpointer(str(workdir), read_only=True)
  kept = checkpointer.all_steps()
  for step in kept:  # Only states whose next loss was finite remain.
    assert step < int(aside)
    params, _ = checkpointer.restore_params(step)
    assert not checkpointing.non_finite_leaves(params)
  checkpointer.close()
  if not kept:
    assert "no checkpoint is left" in str(error.value)
