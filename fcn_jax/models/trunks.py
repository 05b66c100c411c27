"""The two base nets of the FCNs, convolutionalised: VGG16 and CaffeNet.

Each trunk is a table of :class:`TrunkLayer` rows in forward order
(docs/reference.md §2.1, §2.3): a convolution with its ReLU, then optionally a
round-up max pool, an LRN and dropout. fc6 and fc7 are convolutions (the
InnerProduct weights of the ImageNet nets convolutionalised, §4.5). The
:class:`Trunk` module runs a table and returns the blobs the heads read.

* VGG16: thirteen 3x3 convolutions in five blocks, each block ending in a 2x2
  pool; ``conv1_1`` pads by 100; fc6 7x7 and fc7 1x1 with dropout 0.5.
* CaffeNet (``bvlc_reference_caffenet``, FCN-AlexNet's base): conv1 11x11
  stride 4 pad 100, 3x3/2 pools, LRN after pool1 and pool2 (CaffeNet pools
  before it normalises), grouped conv2/4/5, fc6 6x6. Its convolutions keep
  Caffe's default multipliers, so their biases learn at the weights' rate
  and are decayed (§2.3).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models import layers

# (output channels, number of 3x3 convolutions) per VGG16 block; each block
# ends with a 2x2 ceil-mode max pool named pool<block>.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
FC6_KERNEL = 7
INPUT_PAD = 100
DROPOUT_RATE = 0.5


@dataclasses.dataclass(frozen=True)
class TrunkLayer:
  """One convolution of a trunk (a ReLU follows it) and what comes after.

  Attributes:
    name: Caffe layer name.
    features: Output channels of the full-size net.
    kernel: Kernel height and width.
    stride: Convolution stride.
    pad: Zero padding on every side.
    groups: Caffe's ``group``: inputs and outputs split into this many
      consecutive parts, part ``g`` of the output reading only part ``g`` of
      the input.
    pool: Name of the max pool after the ReLU (``""``: none).
    norm: Name of the LRN after the pool (``""``: none).
    dropout: Inverted dropout after the ReLU, in training only.
    fully_connected: A convolutionalised InnerProduct (fc6, fc7: VALID,
      stride 1, one group), computed by ``layers.fc_conv``.
  """
  name: str
  features: int
  kernel: int
  stride: int = 1
  pad: int = 0
  groups: int = 1
  pool: str = ""
  norm: str = ""
  dropout: bool = False
  fully_connected: bool = False


@dataclasses.dataclass(frozen=True)
class TrunkSpec:
  """A base net: its layer table and the rules it shares.

  Attributes:
    name: ``vgg16`` or ``caffenet``.
    layers: The convolutions in forward order.
    pool_window: Max-pool window (stride :attr:`pool_stride`).
    pool_stride: Max-pool stride.
    lrn_size: LRN ``local_size`` (CaffeNet: 5).
    lrn_alpha: LRN ``alpha`` (1e-4), divided by the size as Caffe does.
    lrn_beta: LRN ``beta`` (0.75).
    width_multiple: Reduced widths (``width_divisor`` > 1) are rounded down to
      a multiple of this (2 for CaffeNet, so its two groups stay whole).
    default_bias_multipliers: The convolutions have no Caffe ``param``
      entries, so their biases keep lr_mult 1 and decay_mult 1 like the
      weights (CaffeNet); otherwise biases get 2 and 0 (VGG16 nets).
  """
  name: str
  layers: tuple[TrunkLayer, ...]
  pool_window: int = 2
  pool_stride: int = 2
  lrn_size: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  width_multiple: int = 1
  default_bias_multipliers: bool = False

  @property
  def layer_names(self) -> tuple[str, ...]:
    return tuple(layer.name for layer in self.layers)

  @property
  def first_layer(self) -> str:
    return self.layers[0].name

  def pads(self, input_pad: int = INPUT_PAD) -> tuple[int, ...]:
    """Each convolution's zero padding: the table's, except the first
    convolution's, which is ``input_pad`` (:attr:`Trunk.input_pad`)."""
    return (input_pad,) + tuple(layer.pad for layer in self.layers[1:])

  def width(self, features: int, width_divisor: int) -> int:
    """Output channels of a layer with ``features`` channels at full size."""
    m = self.width_multiple
    return max(m, features // width_divisor // m * m)

  def extents(self, input_pad: int = INPUT_PAD) -> dict[str, layers.Extent]:
    """The native extent of every blob of the table, from the input's.

    The one place where a trunk's size arithmetic lives: each convolution
    rounds down, each pool rounds up, fc6/fc7 are VALID
    (:class:`~fcn_jax.models.layers.Extent`).

    Args:
      input_pad: The first convolution's padding (:attr:`Trunk.input_pad`).

    Returns:
      Extents keyed by blob: every convolution (after its ReLU), pool and
      LRN, in forward order.

    Raises:
      ValueError: A pool could see a side shorter than its window (not in
        the FCNs: their 100-pixel pad keeps every pool input >= 12).
    """
    extents = {}
    extent = layers.Extent()
    for layer, pad in zip(self.layers, self.pads(input_pad)):
      extent = extent.conv(layer.kernel, layer.stride, pad)
      extents[layer.name] = extent
      if layer.pool:
        if extent.minimum() < self.pool_window:
          raise ValueError(
              f"{self.name} with input pad {input_pad}: {layer.pool} can see "
              f"fewer than {self.pool_window} rows, which masked padding does "
              "not support")
        extent = extent.pool(self.pool_window, self.pool_stride)
        extents[layer.pool] = extent
      if layer.norm:
        extents[layer.norm] = extent
    return extents

  def output_channels(self, width_divisor: int = 1) -> dict[str, int]:
    """Channels of each pool blob and of fc7, as the heads see them."""
    channels = {}
    for layer in self.layers:
      width = self.width(layer.features, width_divisor)
      if layer.pool:
        channels[layer.pool] = width
      channels[layer.name] = width
    return channels


def _vgg16_layers() -> tuple[TrunkLayer, ...]:
  table = []
  for block, (channels, depth) in enumerate(VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      table.append(TrunkLayer(
          f"conv{block}_{i}", channels, 3,
          pad=INPUT_PAD if (block, i) == (1, 1) else 1,
          pool=f"pool{block}" if i == depth else ""))
  table.append(TrunkLayer("fc6", FC_WIDTH, FC6_KERNEL, dropout=True,
                          fully_connected=True))
  table.append(TrunkLayer("fc7", FC_WIDTH, 1, dropout=True,
                          fully_connected=True))
  return tuple(table)


VGG16_TRUNK = TrunkSpec("vgg16", _vgg16_layers())

# docs/reference.md §2.3 (voc-fcn-alexnet/net.py).
CAFFENET_TRUNK = TrunkSpec(
    "caffenet",
    (TrunkLayer("conv1", 96, 11, stride=4, pad=INPUT_PAD, pool="pool1",
                norm="norm1"),
     TrunkLayer("conv2", 256, 5, pad=2, groups=2, pool="pool2",
                norm="norm2"),
     TrunkLayer("conv3", 384, 3, pad=1),
     TrunkLayer("conv4", 384, 3, pad=1, groups=2),
     TrunkLayer("conv5", 256, 3, pad=1, groups=2, pool="pool5"),
     TrunkLayer("fc6", FC_WIDTH, 6, dropout=True, fully_connected=True),
     TrunkLayer("fc7", FC_WIDTH, 1, dropout=True, fully_connected=True)),
    pool_window=3, pool_stride=2, width_multiple=2,
    default_bias_multipliers=True)

TRUNKS: Mapping[str, TrunkSpec] = {t.name: t for t in (VGG16_TRUNK,
                                                       CAFFENET_TRUNK)}
# VGG16's parameterised layers in forward order, by Caffe name.
TRUNK_LAYERS = VGG16_TRUNK.layer_names
CAFFENET_LAYERS = CAFFENET_TRUNK.layer_names


class Trunk(nn.Module):
  """A base net through fc7, with fc6/fc7 as convolutions.

  Attributes:
    spec: The layer table (:data:`VGG16_TRUNK` or :data:`CAFFENET_TRUNK`).
    width_divisor: Divides every width (``spec.width``); 1 is the real net.
    dtype: Computation dtype.
    input_pad: Zero padding of the first convolution. Every FCN uses 100 (so
      that the crops are valid for any input size); 1 is VGG16's own
      geometry, where a 224x224 image gives a single fc7 cell (the
      convolutionalised classifier).
    dropout_rate: Inverted dropout after fc6 and fc7 in training.
    suffix: Appended to every layer name (the ``color``/``hha`` streams of
      NYUD color-HHA).
    first_layer: Another name for the first convolution (``conv1_1_bgrd``,
      NYUD color-D's 4-channel conv1_1); ``""`` keeps the table's.
  """
  spec: TrunkSpec
  width_divisor: int = 1
  dtype: Any = jnp.float32
  input_pad: int = INPUT_PAD
  dropout_rate: float = DROPOUT_RATE
  suffix: str = ""
  first_layer: str = ""

  def layer_name(self, name: str) -> str:
    """The variable name of the table's layer ``name`` in this trunk."""
    if self.first_layer and name == self.spec.first_layer:
      name = self.first_layer
    return name + self.suffix

  def layer_names(self) -> tuple[str, ...]:
    return tuple(self.layer_name(n) for n in self.spec.layer_names)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               sizes: jax.Array | None = None) -> dict[str, jax.Array]:
    """Returns the pool blobs and fc7, keyed by the table's Caffe names.

    Args:
      x: ``[N, H, W, C]`` input.
      train: Enables dropout.
      sizes: Optional int32 ``[N, 2]``: each example's true (height, width)
        at the top-left of ``x``. Every blob is then zero outside its native
        extent (:meth:`TrunkSpec.extents`) and equals the native-size blob
        inside it (see :class:`~fcn_jax.models.fcn.FCN`).
    """
    blobs = {}
    extents = self.spec.extents(self.input_pad) if sizes is not None else {}
    x = layers.mask_outside(x, layers.Extent(), sizes)
    # One dropout per stream; the first keeps its automatic name (and so the
    # dropout masks of the single-stream nets), later ones are suffixed.
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train,
                         name=f"dropout{self.suffix}" if self.suffix else None)
    spec = self.spec
    for index, (layer, pad) in enumerate(zip(spec.layers,
                                             spec.pads(self.input_pad))):
      width = spec.width(layer.features, self.width_divisor)
      if layer.fully_connected:
        conv = layers.fc_conv(width, layer.kernel, self.layer_name(layer.name),
                              self.dtype)
      elif index == 0 and layer.groups == 1:
        conv = layers.input_conv(width, layer.kernel, pad,
                                 self.layer_name(layer.name), self.dtype,
                                 stride=layer.stride)
      else:
        conv = layers.caffe_conv(width, layer.kernel, pad,
                                 self.layer_name(layer.name), self.dtype,
                                 stride=layer.stride, groups=layer.groups)
      # The masks follow the layers that can write outside the extent (a
      # bias, a window reaching valid pixels); ReLU, dropout and LRN keep
      # zeros zero.
      x = layers.mask_outside(nn.relu(conv(x)), extents.get(layer.name),
                              sizes)
      if layer.dropout:
        x = dropout(x)
      if layer.pool:
        x = layers.max_pool_ceil(x, spec.pool_window, spec.pool_stride)
        x = layers.mask_outside(x, extents.get(layer.pool), sizes)
        blobs[layer.pool] = x
      if layer.norm:
        x = layers.local_response_norm(x, spec.lrn_size, spec.lrn_alpha,
                                       spec.lrn_beta)
        blobs[layer.norm] = x
    blobs[spec.layers[-1].name] = x
    return blobs


class VGG16(Trunk):
  """The VGG16 trunk (:data:`VGG16_TRUNK`); see :class:`Trunk`."""
  spec: TrunkSpec = VGG16_TRUNK


class CaffeNet(Trunk):
  """The CaffeNet trunk (:data:`CAFFENET_TRUNK`); see :class:`Trunk`."""
  spec: TrunkSpec = CAFFENET_TRUNK
