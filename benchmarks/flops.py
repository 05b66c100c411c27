"""Analytic FLOP counts of the FCNs, from the layer shapes.

Every convolution and transposed convolution is counted as ``2 * MACs``; ReLU,
pooling, crops, sums and the loss are left out (they are < 0.5% of the total).
The shapes follow the Caffe geometry of :mod:`fcn_jax.models` (docs/reference.md
§11), from the same trunk tables: the first convolution pads by 100,
convolutions round down and pools up, ``fc6`` is an unpadded 7x7 (CaffeNet:
6x6) convolution, grouped convolutions do ``1 / groups`` of the MACs, and a
``Deconvolution(k, s)`` maps ``n`` to ``s * (n - 1) + k``.

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
    groups: 1; Caffe's ``group`` (CaffeNet's conv2/4/5); ``C`` for a
      depthwise upsampler.
    transposed: True for a transposed convolution (upsampler).
    trainable: Whether its kernel gets a gradient.
    stride: A convolution's stride.
    pad: A convolution's zero padding on every side.
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
  stride: int = 1
  pad: int = 0

  @property
  def macs(self) -> int:
    """Multiply-accumulates of the forward pass (batch 1)."""
    pixels = math.prod(self.in_size if self.transposed else self.out_size)
    return (pixels * self.kernel * self.kernel * self.in_channels
            * self.out_channels // self.groups)


def fcn_layers(name: str, height: int, width: int,
               num_classes: int | None = None, width_divisor: int = 1,
               upsample_mode: str = "dense",
               learn_upsampling: bool = False) -> list[Layer]:
  """The convolution-like layers of an FCN for one ``height x width`` image.

  Args:
    name: Any of :data:`fcn_jax.models.MODEL_NAMES`.
    height: Input height.
    width: Input width.
    num_classes: Score channels of the (first) head; None: the net's own.
    width_divisor: As in :func:`fcn_jax.models.create_model`.
    upsample_mode: ``dense`` (C x C kernels) or ``depthwise``.
    learn_upsampling: Whether the 2x upsamplers are trainable.

  Returns:
    The layers in execution order (stream by stream, then head by head).
  """
  if name not in models.NETS:
    raise ValueError(f"Unknown model {name!r}; choose one of "
                     f"{models.MODEL_NAMES}.")
  if upsample_mode not in models.UPSAMPLE_MODES:
    raise ValueError(f"Unknown upsample_mode {upsample_mode!r}; choose one "
                     f"of {models.UPSAMPLE_MODES}.")
  net = models.NETS[name]
  trunk = net.trunk_spec
  head = net.head
  inputs = {i.name: i.channels for i in net.inputs}
  layers = []
  streams = []  # (fc7 size, fc7 channels, {pool: (size, channels)}) each.
  for stream in net.streams:
    size, channels = (height, width), inputs[stream.input]
    pools = {}
    for index, spec in enumerate(trunk.layers):
      out_channels = trunk.width(spec.features, width_divisor)
      out = tuple((n + 2 * spec.pad - spec.kernel) // spec.stride + 1
                  for n in size)
      layer_name = (stream.first_layer if index == 0 and stream.first_layer
                    else spec.name) + stream.suffix
      layers.append(Layer(layer_name, size, out, spec.kernel, channels,
                          out_channels, spec.groups, stride=spec.stride,
                          pad=spec.pad))
      size, channels = out, out_channels
      if spec.pool:
        size = tuple(-(-max(n - trunk.pool_window, 0) // trunk.pool_stride)
                     + 1 for n in size)
        pools[spec.pool] = (size, channels)
    streams.append((size, channels, pools))

  for output, classes in zip(net.outputs,
                             net.output_classes(num_classes
                                                or net.num_classes).values()):
    suffix = output.suffix
    groups = classes if upsample_mode == "depthwise" else 1
    for stream, (fc_size, fc_channels, _) in zip(net.streams, streams):
      layers.append(Layer(models.SCORE_LAYER + stream.suffix + suffix,
                          fc_size, fc_size, 1, fc_channels, classes))
    size = streams[0][0]
    pools = streams[0][2]

    def upsample(up, trainable, size=None):
      out = tuple(up.stride * (n - 1) + up.kernel for n in size)
      layers.append(Layer(up.name + suffix, size, out, up.kernel, classes,
                          classes, groups, True, trainable))
      return out

    for skip in head.skips:
      size = upsample(skip.upsampler, learn_upsampling, size)
      pool_size, pool_channels = pools[skip.source]
      layers.append(Layer(skip.score_layer + suffix, pool_size, pool_size, 1,
                          pool_channels, classes))
    upsample(head.final, False, size)
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
