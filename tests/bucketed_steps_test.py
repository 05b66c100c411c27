"""Shape buckets give the native-size results: training, evaluation, predict.

Each bucketed run (images zero-padded to a bucket, the net masking to each
image's true size) is compared with the per-shape path
(``config.input.buckets='none'``: every image alone at its own size) or with
the model applied to each image alone; and the compiles are counted with
JAX's own compile log.
"""

import contextlib
import io
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from fcn_jax import default_config
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.evaluation import evaluator
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib
from tests.buckets_test import mixed_source
from tests.tiny_fcn import random_image, tiny_fcn
from tests import helpers

CAFFE = preprocessing_lib.CAFFE_VGG
WIDTH = 64  # width_divisor: the reference geometry, few channels.
# Training and evaluation: the net with the fewest layers (each compile costs
# seconds: CaffeNet's 7 learned trunk layers, not VGG16's 15); every net's
# masking is checked in the model tests, predict runs FCN-8s.
NET = "fcn_alexnet"


def _config(**overrides):
  config = default_config.get_config()
  config.model.name = NET
  config.model.num_classes = 21
  config.model.width_divisor = WIDTH
  config.model.dropout_rate = 0.0  # Deterministic: comparable updates.
  config.dataset.name = "test"
  config.optim.base_lr = 1e-4  # Moves the tiny net visibly.
  config.optim.momentum = 0.9
  config.num_train_steps = 10
  return helpers.with_overrides(config, overrides)


def _model_and_params():
  """The config's model (no dropout) and random parameters."""
  _, variables = tiny_fcn(NET, width_divisor=WIDTH, seed=1)
  return run_config.model_spec(_config()).create(), variables["params"]


@contextlib.contextmanager
def _compiles(pattern):
  """Collects JAX's compile log lines (``jax.log_compiles``) matching
  ``pattern`` (a regex over the argument shapes)."""
  found = []

  class Handler(logging.Handler):

    def emit(self, record):
      message = record.getMessage()
      if message.startswith("Compiling") and re.search(pattern, message):
        found.append(message)

  handler = Handler()
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield found
  finally:
    logger.removeHandler(handler)


def _train(config, source, model, params, num_batches):
  """Runs ``num_batches`` train-step calls as the training loop does."""
  run = helpers.resolved(config)
  tx = state_lib.create_optimizer(run, params, model)
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  devices = parallel.devices_for_batch(config.batch_size)
  state = parallel.replicate(state, devices)
  step = step_lib.make_train_fn(model, tx, run, devices,
                                donate_state=False)
  batches = helpers.train_iterator(
      config, CAFFE, process_index=0, process_count=1, source=source)
  for _ in range(num_batches):
    state, _ = step(state, parallel.shard(next(batches), len(devices),
                                          keys=step_lib.BATCH_KEYS))
  return parallel.to_host(state.params)


def _assert_params_close(got, want, initial):
  moved = 0.0
  for path, leaf in jax.tree_util.tree_leaves_with_path(want):
    other = got
    for key in path:
      other = other[key.key]
    scale = np.abs(leaf).max() + 1e-12
    np.testing.assert_allclose(other, leaf, atol=2e-5 * scale, rtol=0,
                               err_msg=jax.tree_util.keystr(path))
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(initial)):
    moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(b)).max()))
  assert moved > 1e-4  # The steps changed the parameters (not vacuous).


def test_bucketed_training_equals_native_and_compiles_once_per_bucket():
  """Reference mode (batch 1, momentum): 5 updates over images of 5
  distinct sizes at 2 automatic buckets equal the same updates at each
  image's native size; the train step compiles once per bucket used, the
  per-shape path once per distinct size."""
  source = mixed_source(6, seed=5)
  # A data order whose first 5 draws are 5 distinct images (of 6).
  order = {"input.sampling_seed": 28}
  model, params = _model_and_params()
  label_shapes = r"int32\[1,1,\d+,\d+\]"
  with _compiles(label_shapes) as native_compiles:
    native = _train(_config(**order, **{"input.buckets": "none"}), source,
                    model, params, 5)
  with _compiles(label_shapes) as compiles:
    bucketed = _train(_config(**order, **{"input.max_buckets": 2}), source,
                      model, params, 5)
  assert len(native_compiles) == 5  # One per distinct size.
  assert 1 <= len(compiles) <= 2
  _assert_params_close(bucketed, native, params)


def test_a_batch_over_8_devices_equals_accumulating_one_by_one():
  """FCN-AlexNet's iter_size as one step: 8 images at buckets over 8 fake
  devices (batch 8) give the update of iter_size 8 at native size, batch 1
  (the summed loss: per-image sums averaged over the images)."""
  source = mixed_source(8, seed=6, sizes=[(37, 53), (61, 45)])
  model, params = _model_and_params()
  sequential = _train(_config(**{"input.buckets": "none",
                                 "optim.iter_size": 8}), source, model,
                      params, 8)
  spread = _train(_config(batch_size=8), source, model, params, 1)
  _assert_params_close(spread, sequential, params)


def _native_logits(model, variables, image):
  return np.asarray(helpers.jit_apply(model, variables, jnp.asarray(CAFFE(image))[None],
                                train=False))[0]


def _ties(logits, tolerance=1e-4):
  """Pixels whose two largest logits are within ``tolerance`` of the
  logits' scale: there float rounding may flip the argmax."""
  top = np.sort(logits, axis=-1)[..., -2:]
  return (top[..., 1] - top[..., 0]) <= tolerance * np.abs(logits).max()


def test_bucketed_evaluation_equals_native_and_compiles_per_bucket():
  source = mixed_source(5, seed=8)
  model, params = _model_and_params()
  results = {}
  for name, overrides in [("native", {"input.buckets": "none"}),
                          ("bucketed", {"eval_batch_size": 2,
                                        "input.max_buckets": 2})]:
    config = _config(**overrides)
    step, devices = evaluator.make_eval_fn(model, helpers.resolved(config))
    data = helpers.eval_iterator(
        config, CAFFE, process_index=0, process_count=1, source=source)
    with _compiles(r"bool\[") as compiles:
      results[name], _ = evaluator.evaluate(step, devices, params, data,
                                            num_classes=21)
    results[name]["compiles"] = len(compiles)
  assert results["bucketed"]["compiles"] <= 2
  assert results["native"]["compiles"] == 5  # One per distinct size.
  native = np.asarray(results["native"]["confusion_matrix"])
  bucketed = np.asarray(results["bucketed"]["confusion_matrix"])
  assert native.sum() == bucketed.sum() > 0
  ties = 0
  for record in source.records:
    image = _decode(record["image"])
    ties += int(_ties(_native_logits(model, {"params": params}, image)).sum())
  assert np.abs(native - bucketed).sum() // 2 <= ties
  assert ties <= 0.001 * native.sum()
  assert results["bucketed"]["loss"] == pytest.approx(
      results["native"]["loss"], rel=1e-4)


def _decode(png):
  return np.asarray(Image.open(io.BytesIO(png)))


def test_predict_exact_mode_equals_native_size_at_few_compiles():
  model, variables = tiny_fcn("fcn8s", width_divisor=WIDTH, seed=2)
  rng = np.random.default_rng(3)
  images = [random_image(rng, int(h), int(w))
            for h, w in rng.integers(20, 70, (5, 2))]
  predictor = predictor_lib.Predictor(model, variables, CAFFE, mode="exact",
                                      buckets=64, batch_size=4)
  assert predictor.masked
  logits = predictor.predict_logits(images)
  labels = predictor.predict(images)
  assert predictor.num_compiles == 1  # Every image fits 64x64.
  ties = 0
  for image, got, label in zip(images, logits, labels):
    want = _native_logits(model, variables, image)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    tie = _ties(want)
    assert (label == want.argmax(-1))[~tie].all()
    ties += int(tie.sum())
  assert ties <= 0.001 * sum(i.shape[0] * i.shape[1] for i in images)
  # Fast mode (no masks) at the same bucket is not the native result.
  fast = predictor_lib.Predictor(model, variables, CAFFE, mode="fast",
                                 buckets=64, batch_size=4)
  assert not np.allclose(fast.predict_logits(images[:1])[0],
                         _native_logits(model, variables, images[0]),
                         atol=1e-3 * np.abs(logits[0]).max())
