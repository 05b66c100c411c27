r"""Per-layer CPU profile of a train step's convolutions, XLA against PyTorch.

XLA:CPU runs convolutions asynchronously, so ``jax.profiler`` traces show
only their launch (tens of microseconds) and not their work. This script
times each convolution of a VGG16 FCN-8s step on its own instead, at the
reference geometry (``pad: 100`` conv1_1, round-up 2x2 pools, 7x7 VALID fc6,
1x1 fc7 and score layers) for the given width, image size and batch, as the
three computations of a training step: the forward pass, the input gradient
and the weight gradient. XLA runs ``lax.conv_general_dilated`` (NHWC/HWIO,
what ``nn.Conv`` lowers to) and its VJP under ``jax.jit`` with the XLA:CPU
flags of ``python -m fcn_jax.main``; PyTorch runs ``F.conv2d`` and
``torch.autograd.grad`` in its fastest CPU setting (channels-last, unless
``--torch-memory-format`` says otherwise). Where fcn_jax's layer on a CPU is
not ``nn.Conv`` (conv1_1: ``PaddedInputConv``; fc6/fc7: ``PatchConv``) an
extra row times that layer (with a zero bias). Timed in interleaved rounds
like every benchmark here; the machine watch marks a noisy run. The input
gradient of conv1_1 is not needed in training (the input is data).

  python benchmarks/conv_layers.py --width-divisor 8 --size 64 --batch 8
  python benchmarks/conv_layers.py --size 224 --batch 1

Prints a Markdown table of median milliseconds per call; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import xla_env  # pylint: disable=g-import-not-at-top,wrong-import-position

XLA_CPU_FLAGS = xla_env.configure(sys.argv)  # Before JAX initialises.

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax.models import layers  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ("forward", "input grad", "weight grad")


def conv_layers(size: int, width_divisor: int) -> list[flops.Layer]:
  """Every convolution of FCN-8s with its input size, from the trunk and
  head tables (:func:`benchmarks.flops.fcn_layers`; the fixed bilinear
  upsamplers are left out)."""
  return [layer for layer in flops.fcn_layers(
      "fcn8s", size, size, width_divisor=width_divisor)
          if not layer.transposed]


def fcn_jax_layer(layer: flops.Layer) -> nn.Module | None:
  """The layer fcn_jax builds on a CPU where it is not ``nn.Conv``."""
  if layer.name == "conv1_1":
    return layers.input_conv(layer.out_channels, layer.kernel, layer.pad,
                             layer.name, jnp.float32, stride=layer.stride)
  if layer.name in ("fc6", "fc7"):
    return layers.fc_conv(layer.out_channels, layer.kernel, layer.name,
                          jnp.float32)
  return None


def _xla_fns(layer: flops.Layer, own: bool = False
             ) -> dict[str, Callable[..., jax.Array]]:
  """The layer's three computations: ``lax.conv_general_dilated``, or with
  ``own`` fcn_jax's layer (:func:`fcn_jax_layer`, with a zero bias)."""
  pad = [(layer.pad, layer.pad)] * 2
  module = fcn_jax_layer(layer) if own else None
  bias = jnp.zeros((layer.out_channels,), jnp.float32)

  def conv(x, w):
    if module is not None:
      return module.apply({"params": {"kernel": w, "bias": bias}}, x)
    return jax.lax.conv_general_dilated(
        x, w, (layer.stride,) * 2, pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def input_grad(x, w, g):
    return jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0]

  def weight_grad(x, w, g):
    return jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0]

  return {"forward": jax.jit(lambda x, w, g: conv(x, w)),
          "input grad": jax.jit(input_grad),
          "weight grad": jax.jit(weight_grad)}


class XlaCall:
  """One of a layer's three computations under ``jax.jit``."""

  def __init__(self, layer: flops.Layer, batch: int, part: str,
               own: bool = False):
    self.label = f"{'fcn_jax' if own else 'xla'} {layer.name} {part}"
    self.layer, self.batch, self.part, self.own = layer, batch, part, own

  def setup(self) -> None:
    l, rng = self.layer, np.random.default_rng(0)
    self.args = [jnp.asarray(rng.standard_normal(shape, np.float32))
                 for shape in ((self.batch, *l.in_size, l.in_channels),
                               (l.kernel, l.kernel, l.in_channels,
                                l.out_channels),
                               (self.batch, *l.out_size, l.out_channels))]
    self.fn = _xla_fns(l, self.own)[self.part]
    jax.block_until_ready(self.fn(*self.args))

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      out = self.fn(*self.args)
    jax.block_until_ready(out)
    return time.perf_counter() - start

  def teardown(self) -> None:
    del self.args


class TorchCall:
  """One of a layer's three computations in PyTorch (autograd)."""

  def __init__(self, layer: flops.Layer, batch: int, part: str,
               memory_format: torch.memory_format):
    self.label = f"torch {layer.name} {part}"
    self.layer, self.batch, self.part = layer, batch, part
    self.memory_format = memory_format

  def setup(self) -> None:
    l, gen = self.layer, torch.Generator().manual_seed(0)
    self.x = torch.randn(self.batch, l.in_channels, *l.in_size,
                         generator=gen).to(memory_format=self.memory_format)
    self.w = torch.randn(l.out_channels, l.in_channels, l.kernel, l.kernel,
                         generator=gen).to(memory_format=self.memory_format)
    self.g = torch.randn(self.batch, l.out_channels, *l.out_size,
                         generator=gen).to(memory_format=self.memory_format)
    self.x.requires_grad_(self.part == "input grad")
    self.w.requires_grad_(self.part == "weight grad")
    self.run(1)

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      if self.part == "forward":
        with torch.no_grad():
          F.conv2d(self.x, self.w, stride=self.layer.stride,
                   padding=self.layer.pad)
      else:
        y = F.conv2d(self.x, self.w, stride=self.layer.stride,
                     padding=self.layer.pad)
        wrt = self.x if self.part == "input grad" else self.w
        torch.autograd.grad(y, wrt, self.g)
    return time.perf_counter() - start

  def teardown(self) -> None:
    del self.x, self.w, self.g


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--width-divisor", type=int, default=1)
  parser.add_argument("--torch-memory-format", default="channels_last",
                      choices=("channels_last", "contiguous"))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--min-repeat-seconds", type=float, default=0.2)
  parser.add_argument("--xla-cpu-flags", default="tuned")
  args = parser.parse_args()
  memory_format = {"channels_last": torch.channels_last,
                   "contiguous": torch.contiguous_format}[
                       args.torch_memory_format]
  fcn8s = conv_layers(args.size, args.width_divisor)
  runners = []
  for layer in fcn8s:
    for part in PARTS:
      runners += [XlaCall(layer, args.batch, part),
                  TorchCall(layer, args.batch, part, memory_format)]
      if fcn_jax_layer(layer) is not None:
        runners.append(XlaCall(layer, args.batch, part, own=True))
  for runner in runners:
    runner.setup()
  watch = common.MachineWatch()
  samples = common.time_interleaved(runners, args.repeats,
                                    args.min_repeat_seconds)
  machine = watch.finish()
  env = common.environment()
  print(f"\nFCN-8s convolutions, {args.size}x{args.size}, batch "
        f"{args.batch}, width / {args.width_divisor}; {env.get('cpu')}; "
        f"jax {env.get('jax')}, torch {env.get('torch')} "
        f"({args.torch_memory_format}); XLA:CPU flags {XLA_CPU_FLAGS}; "
        f"{machine}\n")
  ms = {label: 1e3 * statistics.median(s) for label, s in samples.items()}
  head = " | ".join(f"xla {p} | torch {p}" for p in PARTS)
  print(f"| layer | input (H, W, C) -> C | {head} |")
  print("|---|---|" + "---|" * (2 * len(PARTS)))
  # "xla": every layer as lax.conv; "fcn_jax": its own layers where they
  # differ (conv1_1, fc6, fc7), lax.conv elsewhere.
  whos = ("xla", "fcn_jax", "torch")
  totals = {(who, p): 0.0 for who in whos for p in PARTS}
  for layer in fcn8s:
    cells = []
    for part in PARTS:
      for who in ("xla", "torch"):
        value = ms[f"{who} {layer.name} {part}"]
        cells.append(f"{value:.2f}")
        totals[who, part] += value
      own = ms.get(f"fcn_jax {layer.name} {part}")
      totals["fcn_jax", part] += ms[f"xla {layer.name} {part}"] if own is None else own
    height, width = layer.in_size
    print(f"| {layer.name} | {height}x{width}x"
          f"{layer.in_channels} -> {layer.out_channels} | "
          + " | ".join(cells) + " |")
    if fcn_jax_layer(layer) is not None:
      own = [f"{ms[f'fcn_jax {layer.name} {p}']:.2f}" for p in PARTS]
      print(f"| {layer.name}, fcn_jax's {type(fcn_jax_layer(layer)).__name__}"
            f" | | {own[0]} | | {own[1]} | | {own[2]} | |")
  for who in whos:
    cells = [f"**{totals[who, p]:.1f}**" for p in PARTS]
    print(f"| **total, {who}** | | " + " | | ".join(cells) + " | |")
  sums = {who: sum(totals[who, p] for p in PARTS) for who in whos}
  print(f"\nAll three, every layer: lax.conv {sums['xla']:.1f} ms, fcn_jax's "
        f"layers {sums['fcn_jax']:.1f} ms, PyTorch {sums['torch']:.1f} ms "
        f"(fcn_jax / PyTorch = {sums['fcn_jax'] / sums['torch']:.2f}).")


if __name__ == "__main__":
  main()
