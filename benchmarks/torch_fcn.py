"""A PyTorch FCN of the same graph as :mod:`fcn_jax.models`, for speed peers.

The network is written here (not copied from pytorch-fcn) from the same
tables as fcn_jax: the trunk tables (:data:`fcn_jax.models.TRUNKS`: VGG16 with
a 100-pixel pad in ``conv1_1``, 2x2 round-up pooling, fc6/fc7 as 7x7/1x1
convolutions with dropout; CaffeNet with stride-4 conv1, 3x3/2 pooling, LRN
and grouped convolutions), the head table (:data:`fcn_jax.models.HEADS`: 1x1
score layers, fixed bilinear transposed convolutions, the Caffe crops) and
the net table (:data:`fcn_jax.models.NETS`: NYUD's two streams and 4-channel
input, SIFT Flow's two heads). :func:`load_flax_variables` copies an fcn_jax
variable tree into it so both frameworks compute the same function
(``tests/torch_peer_test.py`` checks the logits agree for every net).

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
  """Any fcn_jax net in PyTorch, NCHW, layer names as in Caffe.

  Args:
    name: One of ``fcn_jax.models.MODEL_NAMES``.
    num_classes: Output channels of the (first) head; None: the net's own.
    width_divisor: Divides every trunk width and the fc width (tiny models).
    upsample_mode: ``dense`` or ``depthwise`` transposed convolutions.

  Attributes:
    default_bias_layers: Layers whose biases keep Caffe's default
      multipliers (FCN-AlexNet's trunk; see ``torch_bench.caffe_sgd``).
  """

  def __init__(self, name: str, num_classes: int | None = None,
               width_divisor: int = 1, upsample_mode: str = "dense"):
    super().__init__()
    if name not in models.NETS:
      raise ValueError(f"Unknown model {name!r}; choose one of "
                       f"{models.MODEL_NAMES}.")
    if upsample_mode not in UPSAMPLE_MODES:
      raise ValueError(f"Unknown upsample_mode {upsample_mode!r}; choose one "
                       f"of {UPSAMPLE_MODES}.")
    self.net = models.NETS[name]
    self.head = self.net.head
    spec = self.net.trunk_spec
    self.classes = self.net.output_classes(num_classes
                                           or self.net.num_classes)
    self.num_classes = next(iter(self.classes.values()))
    input_channels = {i.name: i.channels for i in self.net.inputs}
    self.trunk = nn.ModuleDict()
    self.stream_layers: list[list[tuple[str, models.TrunkLayer]]] = []
    pool_channels = {}
    for stream in self.net.streams:
      in_channels = input_channels[stream.input]
      names = []
      for index, layer in enumerate(spec.layers):
        layer_name = (stream.first_layer if index == 0 and stream.first_layer
                      else layer.name) + stream.suffix
        out_channels = spec.width(layer.features, width_divisor)
        self.trunk[layer_name] = nn.Conv2d(
            in_channels, out_channels, layer.kernel, stride=layer.stride,
            padding=layer.pad, groups=layer.groups)
        in_channels = out_channels
        names.append((layer_name, layer))
        if layer.pool:
          pool_channels[layer.pool] = out_channels
      self.stream_layers.append(names)
    fc_width = in_channels
    self.default_bias_layers = (
        tuple(self.trunk) if spec.default_bias_multipliers else ())
    self.dropout = nn.Dropout(models.DROPOUT_RATE)
    self.pool = nn.MaxPool2d(spec.pool_window, spec.pool_stride,
                             ceil_mode=True)
    self.lrn = nn.LocalResponseNorm(spec.lrn_size, spec.lrn_alpha,
                                    spec.lrn_beta, k=1.0)
    self.score = nn.ModuleDict()
    # at-once: fixed per-channel Scale layers (Caffe lr_mult 0).
    self.scale = nn.ParameterDict()
    self.upsample = nn.ModuleDict()
    self.groups = {}
    for output in self.net.outputs:
      classes = self.classes[output.name]
      suffix = output.suffix
      for stream in self.net.streams:
        self.score[models.SCORE_LAYER + stream.suffix + suffix] = nn.Conv2d(
            fc_width, classes, 1)
      for skip in self.head.skips:
        self.score[skip.score_layer + suffix] = nn.Conv2d(
            pool_channels[skip.source], classes, 1)
        if skip.scale is not None:
          self.scale[skip.scale_layer + suffix] = nn.Parameter(
              torch.full((pool_channels[skip.source],), skip.scale),
              requires_grad=False)
      groups = classes if upsample_mode == "depthwise" else 1
      for up in self.head.upsamplers():
        deconv = nn.ConvTranspose2d(classes, classes, up.kernel, up.stride,
                                    bias=False, groups=groups)
        deconv.weight.requires_grad_(False)  # Frozen, as Caffe's lr_mult 0.
        self.upsample[up.name + suffix] = deconv
        self.groups[up.name + suffix] = groups

  def forward(self, images: Any) -> Any:
    """Scores ``[N, C, H, W]`` images (a dict of them for a multi-input
    net); returns ``[N, K, H, W]`` logits (a dict keyed by head for a
    multi-head net)."""
    inputs = images if self.net.multi_input else {
        self.net.inputs[0].name: images}
    height, width = next(iter(inputs.values())).shape[2:]
    features = []
    for stream, names in zip(self.net.streams, self.stream_layers):
      x = inputs[stream.input]
      blobs = {}
      for layer_name, layer in names:
        x = F.relu(self.trunk[layer_name](x), inplace=True)
        if layer.dropout:
          x = self.dropout(x)
        if layer.pool:
          x = self.pool(x)
          blobs[layer.pool] = x
        if layer.norm:
          x = self.lrn(x)
      blobs["fc7"] = x
      features.append(blobs)
    outputs = {}
    for output in self.net.outputs:
      suffix = output.suffix
      scores = [self.score[models.SCORE_LAYER + s.suffix + suffix](f["fc7"])
                for s, f in zip(self.net.streams, features)]
      score = scores[0]
      if self.net.fusion is not None:
        score = sum(w * s for w, s in zip(self.net.fusion.coefficients,
                                          scores))
      for skip in self.head.skips:
        upscored = self.upsample[skip.upsampler.name + suffix](score)
        pooled = features[0][skip.source]
        if skip.scale is not None:
          pooled = pooled * self.scale[skip.scale_layer + suffix][:, None,
                                                                  None]
        skip_score = self.score[skip.score_layer + suffix](pooled)
        off = skip.offset
        score = upscored + skip_score[:, :, off:off + upscored.shape[2],
                                      off:off + upscored.shape[3]]
      score = self.upsample[self.head.final.name + suffix](score)
      off = self.head.final_offset
      outputs[output.name] = score[:, :, off:off + height, off:off + width]
    return outputs if self.net.multi_head else next(iter(outputs.values()))


def _torch_deconv_weight(kernel: np.ndarray, groups: int) -> np.ndarray:
  """fcn_jax upsampling kernel -> ``ConvTranspose2d`` weight.

  Args:
    kernel: ``(k, k, C, C)`` (dense) or ``(k, k, 1, C)`` (depthwise) kernel of
      ``lax.conv_transpose`` without kernel transposition, i.e. the spatially
      flipped Caffe kernel.
    groups: 1 for a dense ``(C, C, k, k)`` weight, else ``C``, for
      ``(C, 1, k, k)``.

  Returns:
    The PyTorch weight.

  Raises:
    ValueError: A dense kernel with a non-zero off-diagonal cannot be
      depthwise.
  """
  kernel = kernel[::-1, ::-1]
  if groups == 1:  # (groups == C == 1 is both: the dense form covers it.)
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
          np.asarray(params[name]["kernel"]), module.groups[name])))
  return module
