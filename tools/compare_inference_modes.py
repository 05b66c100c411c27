r"""Measures how much fast (padded-bucket) inference differs from exact.

  python tools/compare_inference_modes.py [--image IMG] [--model fcn8s]
      [--width-divisor 16] [--buckets 32] [--seeds 3]

No trained weights can be downloaded here, so the measurement uses a network
with random weights: Flax's default (LeCun-normal) trunk initialisation and
normally distributed score layers (std 1/sqrt(fan_in); the Caffe zero init
would make every logit 0). For each seed it predicts the image in ``exact``
mode (native size) and in ``fast`` mode (zero-padded after preprocessing to
the bucket, then cropped) and reports the fraction of pixels whose argmax
class differs, the largest logit difference, and how far the differing pixels
are from the padded (bottom/right) edges.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fcn_jax.inference import predictor as predictor_lib
from fcn_jax import models
from fcn_jax.data.preprocessing import CAFFE_VGG

DEMO = (pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
        / "demo" / "image.jpg")


def random_variables(model: models.FCN, seed: int) -> dict:
  """Default-initialised trunk with random normal score layers."""
  variables = models.init_variables(model, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  params = dict(variables["params"])
  for layer in params:
    if layer.startswith("score"):
      kernel = params[layer]["kernel"]
      std = 1.0 / np.sqrt(np.prod(kernel.shape[:3]))
      params[layer] = {
          "kernel": jnp.asarray(rng.normal(0, std, kernel.shape), jnp.float32),
          "bias": jnp.zeros(params[layer]["bias"].shape, jnp.float32)}
  return {"params": params}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image", default=str(DEMO))
  parser.add_argument("--model", default="fcn8s", choices=[
      name for name, net in models.NETS.items()  # Colour in, one head out.
      if net.inputs == (models.nets.Input(),) and not net.multi_head])
  parser.add_argument("--width-divisor", type=int, default=16)
  parser.add_argument("--buckets", default="32", type=predictor_lib.parse_buckets)
  parser.add_argument("--seeds", type=int, default=3)
  args = parser.parse_args()
  image = np.asarray(Image.open(args.image).convert("RGB"))
  height, width = image.shape[:2]
  model = models.create_model(args.model, width_divisor=args.width_divisor)
  print(f"{args.model} width/{args.width_divisor}, image {height}x{width}, "
        f"bucket {predictor_lib.bucket_shape(height, width, args.buckets)}")
  for seed in range(args.seeds):
    variables = random_variables(model, seed)
    exact = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact")
    fast = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="fast",
                               buckets=args.buckets)
    a = exact.predict_logits([image])[0]
    b = fast.predict_logits([image])[0]
    differs = a.argmax(-1) != b.argmax(-1)
    rows, cols = np.nonzero(differs)
    edge = np.minimum(height - 1 - rows, width - 1 - cols)
    print(f"seed {seed}: argmax differs on {100 * differs.mean():.3f}% of "
          f"pixels; max |logit diff| {np.abs(a - b).max():.4f} "
          f"(logit range {a.min():.2f}..{a.max():.2f}); differing pixels are "
          f"within {edge.max() if edge.size else 0} px of the bottom/right "
          f"edge (median {np.median(edge) if edge.size else 0:.0f})")


if __name__ == "__main__":
  main()
