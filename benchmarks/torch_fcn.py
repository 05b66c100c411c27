"""A PyTorch FCN of the same graph as :mod:`fcn_jax.models`, for speed peers.

The network is written here (not copied from pytorch-fcn) from the same head
table as fcn_jax (:data:`fcn_jax.models.HEADS`): VGG16 with a 100-pixel pad in
``conv1_1``, ceil-mode 2x2 max pooling, fc6/fc7 as 7x7/1x1 convolutions with
dropout, 1x1 score layers, fixed bilinear transposed convolutions and the Caffe
crops (5/9/31 for FCN-8s). :func:`load_flax_variables` copies an fcn_jax
variable tree into it so both frameworks compute the same function
(``tests/torch_peer_test.py`` checks the logits agree).

Upsampling is either ``dense`` (a ``C x C`` transposed convolution, as Caffe and
pytorch-fcn do) or ``depthwise`` (``groups=C``, the same function when the
kernel is diagonal, as FCN's bilinear kernels are). ReLUs are in place, as in
pytorch-fcn.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from fcn_jax import models

UPSAMPLE_MODES = ("dense", "depthwise")


class TorchFCN(nn.Module):
  """FCN-32s/16s/8s (VGG16) in PyTorch, NCHW, layer names as in Caffe.

  Args:
    name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s_atonce``.
    num_classes: Output channels.
    width_divisor: Divides every trunk width and the fc width (tiny models).
    upsample_mode: ``dense`` or ``depthwise`` transposed convolutions.
  """

  def __init__(self, name: str, num_classes: int = 21, width_divisor: int = 1,
               upsample_mode: str = "dense"):
    super().__init__()
    if name not in models.HEADS:
      raise ValueError(f"Unknown model {name!r}; choose one of "
                       f"{models.MODEL_NAMES}.")
    if upsample_mode not in UPSAMPLE_MODES:
      raise ValueError(f"Unknown upsample_mode {upsample_mode!r}; choose one "
                       f"of {UPSAMPLE_MODES}.")
    self.head = models.HEADS[name]
    self.num_classes = num_classes
    width = lambda channels: max(1, channels // width_divisor)
    self.trunk = nn.ModuleDict()
    self.blocks: list[list[str]] = []
    in_channels = 3
    for block, (channels, depth) in enumerate(models.VGG16_BLOCKS, start=1):
      names = []
      for i in range(1, depth + 1):
        pad = models.INPUT_PAD if (block, i) == (1, 1) else 1
        layer = f"conv{block}_{i}"
        self.trunk[layer] = nn.Conv2d(in_channels, width(channels), 3,
                                      padding=pad)
        in_channels = width(channels)
        names.append(layer)
      self.blocks.append(names)
    fc_width = width(models.FC_WIDTH)
    self.trunk["fc6"] = nn.Conv2d(in_channels, fc_width, models.FC6_KERNEL)
    self.trunk["fc7"] = nn.Conv2d(fc_width, fc_width, 1)
    self.dropout = nn.Dropout(models.DROPOUT_RATE)
    self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
    self.score = nn.ModuleDict({"score_fr": nn.Conv2d(fc_width, num_classes,
                                                      1)})
    pool_channels = {f"pool{b}": width(c)
                     for b, (c, _) in enumerate(models.VGG16_BLOCKS, start=1)}
    # at-once: fixed per-channel Scale layers (Caffe lr_mult 0).
    self.scale = nn.ParameterDict()
    upsamplers = [s.upsampler for s in self.head.skips] + [self.head.final]
    for skip in self.head.skips:
      self.score[skip.score_layer] = nn.Conv2d(pool_channels[skip.source],
                                               num_classes, 1)
      if skip.scale is not None:
        self.scale[skip.scale_layer] = nn.Parameter(
            torch.full((pool_channels[skip.source],), skip.scale),
            requires_grad=False)
    groups = num_classes if upsample_mode == "depthwise" else 1
    self.upsample = nn.ModuleDict()
    for up in upsamplers:
      deconv = nn.ConvTranspose2d(num_classes, num_classes, up.kernel,
                                  up.stride, bias=False, groups=groups)
      deconv.weight.requires_grad_(False)  # Frozen, as Caffe's lr_mult 0.
      self.upsample[up.name] = deconv
    self.groups = groups

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    """Scores ``[N, 3, H, W]`` images; returns ``[N, C, H, W]`` logits."""
    height, width = images.shape[2:]
    blobs = {}
    x = images
    for block, names in enumerate(self.blocks, start=1):
      for layer in names:
        x = F.relu(self.trunk[layer](x), inplace=True)
      x = self.pool(x)
      blobs[f"pool{block}"] = x
    x = self.dropout(F.relu(self.trunk["fc6"](x), inplace=True))
    x = self.dropout(F.relu(self.trunk["fc7"](x), inplace=True))
    score = self.score["score_fr"](x)
    for skip in self.head.skips:
      upscored = self.upsample[skip.upsampler.name](score)
      features = blobs[skip.source]
      if skip.scale is not None:
        features = features * self.scale[skip.scale_layer][:, None, None]
      skip_score = self.score[skip.score_layer](features)
      off = skip.offset
      score = upscored + skip_score[:, :, off:off + upscored.shape[2],
                                    off:off + upscored.shape[3]]
    score = self.upsample[self.head.final.name](score)
    off = self.head.final_offset
    return score[:, :, off:off + height, off:off + width]


def _torch_deconv_weight(kernel: np.ndarray, groups: int) -> np.ndarray:
  """fcn_jax upsampling kernel -> ``ConvTranspose2d`` weight.

  Args:
    kernel: ``(k, k, C, C)`` (dense) or ``(k, k, 1, C)`` (depthwise) kernel of
      ``lax.conv_transpose`` without kernel transposition, i.e. the spatially
      flipped Caffe kernel.
    groups: 1 for a dense ``(C, C, k, k)`` weight, ``C`` for ``(C, 1, k, k)``.

  Returns:
    The PyTorch weight.

  Raises:
    ValueError: A dense kernel with a non-zero off-diagonal cannot be
      depthwise.
  """
  kernel = kernel[::-1, ::-1]
  if groups == 1:
    dense = kernel if kernel.shape[2] > 1 else models.dense_kernel(kernel)
    return dense.transpose(2, 3, 0, 1)
  depthwise = kernel if kernel.shape[2] == 1 else models.depthwise_kernel(
      kernel)
  return depthwise[:, :, 0, :].transpose(2, 0, 1)[:, None]


def load_flax_variables(module: TorchFCN,
                        variables: Mapping[str, Any]) -> TorchFCN:
  """Copies an fcn_jax variable tree into ``module``.

  Conv kernels go HWIO -> OIHW. fcn_jax's transposed-conv kernel equals the
  spatially flipped Caffe/PyTorch kernel (docs/reference.md §4.3), so it is
  flipped back and laid out ``(Cin, Cout, k, k)``, or ``(C, 1, k, k)`` for a
  depthwise module; either fcn_jax upsample mode loads into either PyTorch
  mode.

  Args:
    module: The PyTorch network to fill (its weights are overwritten).
    variables: ``{'params': ...}`` from ``fcn_jax`` for the same model.

  Returns:
    ``module``, for chaining.
  """
  params = variables["params"]
  tensor = lambda a: torch.from_numpy(np.array(a, np.float32))
  convs = dict(module.trunk.items()) | dict(module.score.items())
  with torch.no_grad():
    for name, conv in convs.items():
      conv.weight.copy_(tensor(np.asarray(params[name]["kernel"]).transpose(
          3, 2, 0, 1)))
      conv.bias.copy_(tensor(params[name]["bias"]))
    for name, scale in module.scale.items():
      scale.copy_(tensor(params[name]["scale"]))
    for name, deconv in module.upsample.items():
      deconv.weight.copy_(tensor(_torch_deconv_weight(
          np.asarray(params[name]["kernel"]), module.groups)))
  return module
