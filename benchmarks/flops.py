"""Analytic FLOP counts of the FCNs, from the layer shapes.

Every convolution and transposed convolution is counted as ``2 * MACs``; ReLU,
pooling, crops, sums and the loss are left out (they are < 0.5% of the total).
The shapes follow the Caffe geometry of :mod:`fcn_jax.models` (docs/reference.md
§11): ``conv1_1`` pads by 100, the pools round up, ``fc6`` is an unpadded 7x7
convolution and a ``Deconvolution(k, s)`` maps ``n`` to ``s * (n - 1) + k``.

A transposed convolution does ``k * k`` MACs per *input* pixel and channel
pair: the zeros of the stride-dilated input are not counted (cuDNN and XLA's
GPU backend skip them; see :func:`xla_flops` for what XLA counts).

Training counts the forward pass, the gradient with respect to every layer's
input except the first one (the images need none), and the gradient with
respect to every trainable kernel; each is as costly as the forward layer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fcn_jax import models


@dataclasses.dataclass(frozen=True)
class Layer:
  """One convolution-like layer of an FCN at a given input size.

  Attributes:
    name: Caffe layer name.
    in_size: Input (height, width).
    out_size: Output (height, width).
    kernel: Kernel height and width.
    in_channels: Input channels.
    out_channels: Output channels.
    groups: 1, or ``C`` for a depthwise upsampler.
    transposed: True for a transposed convolution (upsampler).
    trainable: Whether its kernel gets a gradient.
  """
  name: str
  in_size: tuple[int, int]
  out_size: tuple[int, int]
  kernel: int
  in_channels: int
  out_channels: int
  groups: int = 1
  transposed: bool = False
  trainable: bool = True

  @property
  def macs(self) -> int:
    """Multiply-accumulates of the forward pass (batch 1)."""
    pixels = math.prod(self.in_size if self.transposed else self.out_size)
    return (pixels * self.kernel * self.kernel * self.in_channels
            * self.out_channels // self.groups)


def fcn_layers(name: str, height: int, width: int, num_classes: int = 21,
               width_divisor: int = 1, upsample_mode: str = "dense",
               learn_upsampling: bool = False) -> list[Layer]:
  """The convolution-like layers of an FCN for one ``height x width`` image.

  Args:
    name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s_atonce``.
    height: Input height.
    width: Input width.
    num_classes: Score channels.
    width_divisor: As in :func:`fcn_jax.models.create_model`.
    upsample_mode: ``dense`` (C x C kernels) or ``depthwise``.
    learn_upsampling: Whether the 2x upsamplers are trainable.

  Returns:
    The layers in execution order.
  """
  if name not in models.HEADS:
    raise ValueError(f"Unknown model {name!r}; choose one of "
                     f"{models.MODEL_NAMES}.")
  if upsample_mode not in models.UPSAMPLE_MODES:
    raise ValueError(f"Unknown upsample_mode {upsample_mode!r}; choose one "
                     f"of {models.UPSAMPLE_MODES}.")
  head = models.HEADS[name]
  channels_of = lambda c: max(1, c // width_divisor)
  layers = []
  size, channels = (height, width), 3
  pools = {}

  def conv(layer_name, kernel, pad, out_channels):
    nonlocal size, channels
    out = tuple(n + 2 * pad - kernel + 1 for n in size)
    layers.append(Layer(layer_name, size, out, kernel, channels, out_channels))
    size, channels = out, out_channels

  for block, (block_channels, depth) in enumerate(models.VGG16_BLOCKS, 1):
    for i in range(1, depth + 1):
      pad = models.INPUT_PAD if (block, i) == (1, 1) else 1
      conv(f"conv{block}_{i}", 3, pad, channels_of(block_channels))
    size = tuple(math.ceil(n / 2) for n in size)
    pools[f"pool{block}"] = (size, channels)
  conv("fc6", models.FC6_KERNEL, 0, channels_of(models.FC_WIDTH))
  conv("fc7", 1, 0, channels_of(models.FC_WIDTH))
  conv("score_fr", 1, 0, num_classes)
  groups = num_classes if upsample_mode == "depthwise" else 1

  def upsample(up, trainable):
    nonlocal size
    out = tuple(up.stride * (n - 1) + up.kernel for n in size)
    layers.append(Layer(up.name, size, out, up.kernel, num_classes,
                        num_classes, groups, True, trainable))
    size = out

  for skip in head.skips:
    upsample(skip.upsampler, learn_upsampling)
    pool_size, pool_channels = pools[skip.source]
    layers.append(Layer(skip.score_layer, pool_size, pool_size, 1,
                        pool_channels, num_classes))
  upsample(head.final, False)
  return layers


def forward_flops(layers: list[Layer]) -> int:
  """FLOPs (2 * MACs) of one forward pass of one image."""
  return 2 * sum(layer.macs for layer in layers)


def train_flops(layers: list[Layer]) -> int:
  """FLOPs of one training step (forward + backward) of one image."""
  total = 0
  for index, layer in enumerate(layers):
    passes = 1 + (index > 0) + layer.trainable
    total += 2 * passes * layer.macs
  return total


def model_flops(name: str, height: int, width: int, train: bool = False,
                **options: Any) -> int:
  """Analytic FLOPs per image of a forward pass or a training step."""
  layers = fcn_layers(name, height, width, **options)
  return train_flops(layers) if train else forward_flops(layers)


def xla_flops(compiled: Any) -> float | None:
  """FLOPs that XLA's cost analysis reports for a compiled computation.

  XLA counts every elementwise op too, and counts a transposed convolution as
  the convolution of the stride-dilated input, zeros included, so for dense
  upsamplers its number is larger than :func:`model_flops`.

  Args:
    compiled: A ``jax.stages.Compiled`` (``jitted.lower(...).compile()``).

  Returns:
    The ``flops`` entry, or None when the backend reports none.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per device.
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])
