"""Tiny FCNs with random weights, shared by the inference tests.

``models.init_variables`` compiles the whole net and zero-initialises the score
layers (as Caffe does), so every logit would be 0. Here the variables are built
from the shapes alone (``jax.eval_shape``, nothing compiled): He-normal
convolutions with small random biases, random score layers, the reference
bilinear upsamplers and the at-once scale constants. Also: saving one as a
training checkpoint, and running a command-line module in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import models


def tiny_fcn(name: str = "fcn32s", width_divisor: int = 16, seed: int = 0,
             num_classes: int = 21):
  """``(model, variables)`` of a narrow FCN with random weights."""
  model = models.create_model(name, num_classes=num_classes,
                              width_divisor=width_divisor)
  return model, random_variables(model, seed)


def random_variables(model: models.FCN, seed: int = 0, kernel_gain: float = 2.0,
                     bias_std: float = 0.1) -> dict:
  """Random variables of ``model`` from its shapes alone (nothing compiled).

  For tests that need parameters of the right tree, not the model's own init
  (``models.init_variables``: a program of seconds to compile per net and
  width on CPU). Kernels are ``N(0, kernel_gain / fan_in)`` (2: He, 1: LeCun
  as Flax's default init), biases ``N(0, bias_std)``, score layers random
  too; upsamplers and Scale layers start as the reference does
  (``model.reference_init``: bilinear kernels, dense or depthwise; constants).
  """
  rng = np.random.default_rng(seed)
  frozen = set(model.frozen_layers())
  params = {}
  # The init's own (sorted) layer order, not models.param_shapes' forward
  # order: the order of the draws, and so every test's random values.
  shapes = jax.eval_shape(lambda: models.init_variables(model))["params"]
  for layer, leaves in shapes.items():
    if layer in frozen:
      params[layer] = model.reference_init(
          layer, {k: v.shape for k, v in leaves.items()})[0]
    else:
      kernel = leaves["kernel"].shape
      fan_in = np.prod(kernel[:3])
      params[layer] = {
          "kernel": rng.normal(0, np.sqrt(kernel_gain / fan_in), kernel),
          "bias": rng.normal(0, bias_std, leaves["bias"].shape)}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  return {"params": params}


def random_image(rng: np.random.Generator, height: int,
                 width: int) -> np.ndarray:
  """A random uint8 RGB image: 8x8 blocks of colour plus noise."""
  coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3))
  image = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
  image = image + rng.normal(0, 10, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def save_tiny_checkpoint(workdir, name: str = "fcn8s",
                         width_divisor: int = 32, step: int = 7):
  """Saves a tiny random FCN as a training checkpoint under ``workdir``.

  Returns:
    ``(model, variables)`` as saved.
  """
  # pylint: disable-next=g-import-not-at-top
  from fcn_jax import checkpointing
  from fcn_jax.data import preprocessing
  model, variables = tiny_fcn(name, width_divisor=width_divisor)
  metadata = checkpointing.make_metadata(
      models.ModelSpec(name, model.num_classes, width_divisor=width_divisor),
      preprocessing.CAFFE_VGG)
  checkpointer = checkpointing.Checkpointer(str(workdir))
  checkpointer.save(step, {
      "params": jax.tree.map(np.asarray, variables["params"]),
      "opt_state": {}, "step": np.int32(step),
      "rng": np.zeros(2, np.uint32)}, metadata=metadata)
  checkpointer.wait()
  checkpointer.close()
  return model, variables


def run_module(args, cwd, root):
  """Runs ``python -m ARGS`` with the project on the path, on one CPU."""
  env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)
