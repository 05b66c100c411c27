r"""Where a CPU training step's time goes, and what each speed-up saves.

Times, in turns and in one process (as ``benchmarks/common.py`` does):

* fcn_jax's real train step (``jax_bench.create_train_step``) in variants
  that switch the CPU speed-ups off one at a time: the tiled max pooling
  (``layers.max_pool_ceil``; off: ``nn.max_pool``, whose gradient is XLA's
  select-and-scatter), PatchConv fc6/fc7 (off: ``nn.Conv``) and donation of
  the state (off: a new state every step);
* the parts of the fcn_jax step: forward (``train=True``, with the loss),
  forward + backward (``jax.grad`` of the loss);
* the same parts of the PyTorch peer (``torch_bench.TorchRunner``'s model
  and loss, one setting) and its full step.

  python benchmarks/step_breakdown.py --models fcn8s --sizes 224 --batch 1
  python benchmarks/step_breakdown.py --width-divisor 8 --sizes 64 --batch 8

Prints a Markdown table of median seconds per step; nothing is written.
"""

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import xla_env  # pylint: disable=g-import-not-at-top,wrong-import-position

XLA_CPU_FLAGS = xla_env.configure(sys.argv)  # Before JAX initialises.

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import torch_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax.models import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax import run_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax.models import layers  # pylint: disable=g-import-not-at-top,wrong-import-position

SPEEDUPS = ("tiled_pool", "patch_conv", "donate")


def _reference_pool(x, window=2, stride=2):
  """``layers.max_pool_ceil`` as it was: ``nn.max_pool`` for every window."""
  pads = [(0, window - s if s < window else stride - 1) for s in x.shape[1:3]]
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=tuple(pads))


@contextlib.contextmanager
def speedups(enabled):
  """Switches the CPU speed-ups in ``enabled`` on and the others off."""
  saved = (layers.max_pool_ceil, layers.PATCH_CONV_BACKENDS,
           parallel.DONATE_ON_CPU)
  if "tiled_pool" not in enabled:
    layers.max_pool_ceil = _reference_pool
  if "patch_conv" not in enabled:
    layers.PATCH_CONV_BACKENDS = ()
  parallel.DONATE_ON_CPU = "donate" in enabled
  try:
    yield
  finally:
    (layers.max_pool_ceil, layers.PATCH_CONV_BACKENDS,
     parallel.DONATE_ON_CPU) = saved


class StepVariant:
  """fcn_jax's train step with some speed-ups off (compiled under them)."""

  def __init__(self, row, enabled):
    self.row, self.enabled = row, frozenset(enabled)
    off = [s for s in SPEEDUPS if s not in self.enabled]
    self.label = "step, all on" if not off else "step, off: " + "+".join(off)

  def setup(self):
    with speedups(self.enabled):
      self.inner = jax_bench.JaxRunner(self.row, train=True)
      self.inner.setup()

  def run(self, steps):
    return self.inner.run(steps)


class JaxPart:
  """The fcn_jax forward pass with the loss, or its gradient."""

  def __init__(self, row, part):
    self.row, self.part = row, part
    self.label = f"fcn_jax {part}"

  def setup(self):
    row = self.row
    self.state, _, _ = jax_bench.create_train_step(
        jax_bench.train_config(row), row.upsample)
    model = run_config.model_spec(jax_bench.train_config(row)).create(
    ).clone(upsample_mode=row.upsample)
    images = jnp.asarray(common.random_images(row.batch, row.size))
    labels = jnp.asarray(common.random_labels(row.batch, row.size))

    def loss(params):
      logits = model.apply({"params": params}, images, train=True,
                           rngs={"dropout": jax.random.key(0)})
      weights = losses.pixel_weights(labels, logits.shape[-1])
      return losses.weighted_loss_sum(logits, labels, weights) / jnp.maximum(
          jnp.sum(weights), 1.0)

    fn = loss if self.part == "forward" else jax.grad(loss)
    self.params = self.state.params
    self.fn = jax.jit(fn).lower(self.params).compile()
    self.run(1)

  def run(self, steps):
    import time  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    for _ in range(steps):
      out = self.fn(self.params)
    jax.block_until_ready(out)
    return time.perf_counter() - start


class TorchPart(torch_bench.TorchRunner):
  """The PyTorch peer's forward (with the loss), forward + backward, or
  full step, in one setting."""

  def __init__(self, row, setting, part):
    super().__init__(row, True, setting, f"torch {setting} {part}")
    self.part = part

  def run(self, steps):
    if self.part == "step":
      return super().run(steps)
    import time  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    for _ in range(steps):
      with torch.set_grad_enabled(self.part != "forward"):
        loss = torch_bench.pixel_loss(self.model(self.images), self.labels,
                                      self.optim_config.loss_normalization)
      if self.part != "forward":
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="fcn8s")
  parser.add_argument("--sizes", type=int, default=224)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--width-divisor", type=int, default=1)
  parser.add_argument("--upsample", default="depthwise")
  parser.add_argument("--torch-setting", default="depthwise")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--min-repeat-seconds", type=float, default=1.0)
  parser.add_argument("--xla-cpu-flags", default="tuned")
  args = parser.parse_args()
  torch.set_num_threads(max(1, torch.get_num_threads()))
  row = common.Row(args.models, args.sizes, "float32", args.upsample,
                   args.batch, args.width_divisor)
  runners = [StepVariant(row, SPEEDUPS)]
  runners += [StepVariant(row, set(SPEEDUPS) - {s}) for s in SPEEDUPS]
  runners.append(StepVariant(row, ()))
  runners += [JaxPart(row, "forward"), JaxPart(row, "forward+backward")]
  runners += [TorchPart(row, args.torch_setting, p)
              for p in ("forward", "forward+backward", "step")]
  for runner in runners:
    print(f"setting up {runner.label}", flush=True)
    runner.setup()
  samples = common.time_interleaved(runners, args.repeats,
                                    args.min_repeat_seconds)
  env = common.environment()
  print(f"\n{row}; {env.get('cpu')}; load {env.get('load_average_1_5_15')}; "
        f"XLA:CPU flags {XLA_CPU_FLAGS}\n")
  print("| what | seconds | img/s |\n|---|---|---|")
  for runner in runners:
    median = statistics.median(samples[runner.label])
    print(f"| {runner.label} | {median:.3f} | {args.batch / median:.2f} |")


if __name__ == "__main__":
  main()
