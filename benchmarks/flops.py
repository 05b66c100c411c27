"""Analytic FLOP counts of the FCNs, from the layer shapes.

Every convolution and transposed convolution is counted as ``2 * MACs``; ReLU,
pooling, crops, sums and the loss are left out (they are < 0.5% of the total).
The layers, their names and every blob's size come from :mod:`fcn_jax.models`
itself (docs/reference.md §11): the trunk and head tables and their extents
(``TrunkSpec.extents``, ``HeadSpec.extents``: the first convolution pads by
100, convolutions round down and pools up, a ``Deconvolution(k, s)`` maps
``n`` to ``s * (n - 1) + k``) and the model's layer names
(``FCN.trunk_layers``, ``FCN.head_layers``, ``FCN.frozen_layers``); grouped
convolutions do ``1 / groups`` of the MACs.

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

import numpy as np

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
  model = models.create_model(name, num_classes, width_divisor=width_divisor,
                              upsample_mode=upsample_mode,
                              learn_upsampling=learn_upsampling)
  trunk = net.trunk_spec
  # Every blob's size from the tables' own geometry (TrunkSpec.extents,
  # HeadSpec.extents), every name from the model (FCN.trunk_layers,
  # FCN.head_layers).
  hw = np.array([[height, width]])
  extents = trunk.extents()
  extents.update(net.head.extents(extents["fc7"]))
  sizes = {blob: tuple(int(n) for n in extent(hw)[0])
           for blob, extent in extents.items()}
  names = iter(model.trunk_layers())
  layers, channels = [], {}
  for stream in net.streams:
    size, in_channels = (height, width), model.input_channels[stream.input]
    for spec, pad in zip(trunk.layers, trunk.pads()):
      out_channels = trunk.width(spec.features, width_divisor)
      layers.append(Layer(next(names), size, sizes[spec.name], spec.kernel,
                          in_channels, out_channels, spec.groups,
                          stride=spec.stride, pad=pad))
      size, in_channels = sizes[spec.pool or spec.name], out_channels
      channels[spec.pool or spec.name] = out_channels
  frozen = set(model.frozen_layers())
  for row in model.head_layers():
    if row.kind == "score":  # On fc7 or a pool: the size it reads.
      size = sizes[row.source]
      layers.append(Layer(row.name, size, size, 1, channels[row.source],
                          row.classes))
      if row.source == "fc7":  # The scores the first upsampler reads.
        scores = size
    elif row.kind == "upsampler":
      up, groups = row.what, (row.classes if upsample_mode == "depthwise"
                              else 1)
      layers.append(Layer(row.name, scores, sizes[up.name], up.kernel,
                          row.classes, row.classes, groups, True,
                          row.name not in frozen))
      scores = sizes[up.name]
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
