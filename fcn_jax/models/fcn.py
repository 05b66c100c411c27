"""The FCN module: trunk(s), head(s) and fusion of one reference net.

A transcription of the reference Caffe nets (docs/reference.md §2-§4, §8):

* Each stream runs a trunk (:mod:`fcn_jax.models.trunks`) on its input.
* Each output runs the net's head (:mod:`fcn_jax.models.heads`): ``score_fr``
  on fc7, the skip steps, the final upsampler and crop. With late fusion the
  streams' ``score_fr`` are summed with their coefficients first.
* Upsamplers are ``nn.ConvTranspose`` (VALID, no bias) initialised with the
  diagonal bilinear kernel of ``surgery.upsample_filt``. They live in
  ``params`` under their Caffe names so weights map 1:1, and are frozen (Caffe
  ``lr_mult: 0``): :meth:`FCN.frozen_layers` names them for the optimizer.

With ``sizes`` (:meth:`FCN.__call__`) every blob is masked to its native
extent, so that inputs padded to one shape give their native-size logits.

Variables are keyed by the Caffe layer names (``conv1_1`` ... ``upscore8``,
``conv1_1color``, ``score_fr_sem``, ...) in one flat tree. Kernels are HWIO.
Score layers start at zero, as Caffe's default filler does.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.models import heads as heads_lib
from fcn_jax.models import layers
from fcn_jax.models import nets
from fcn_jax.models import trunks


class HeadLayer(NamedTuple):
  """One head layer (:meth:`FCN.head_layers`).

  Attributes:
    name: Its Caffe name (its variables' key).
    kind: ``score``, ``upsampler`` or ``scale``.
    what: The :class:`~fcn_jax.models.heads.Upsampler` of an upsampler, the
      constant of a scale, None for a score layer.
    classes: The classes of its output.
    source: The blob it reads: the trunk's ``fc7`` (each stream's) or a
      pool, or for an upsampler the head layer before it.
  """
  name: str
  kind: str
  what: Any
  classes: int
  source: str


class FCN(nn.Module):
  """A fully convolutional network: one of :data:`fcn_jax.models.NETS`.

  Attributes:
    net: Which reference net (trunk, head, inputs, streams, outputs).
    num_classes: Classes of the first output (21 for PASCAL VOC); outputs
      with a fixed count (SIFT Flow's ``geo``) keep theirs.
    width_divisor: Divides every trunk width (64 ... 512) and the fc width
      (4096); 1 is the real net. Larger values give tiny models for tests.
    dtype: Computation dtype (e.g. ``jnp.bfloat16``). Parameters stay float32
      and the logits are returned in float32.
    learn_upsampling: Train the 2x upsamplers (the CVPR variant); the final
      upsampler stays fixed.
    dropout_rate: Dropout after fc6 and fc7 in training (inverted dropout).
    upsample_mode: ``"dense"`` (default) stores each upsampler as Caffe does,
      a ``(k, k, C, C)`` kernel whose off-diagonal is zero, so parameter counts
      match docs/reference.md §10; ``"depthwise"`` stores only the diagonal
      ``(k, k, 1, C)`` (:class:`~fcn_jax.models.layers.DepthwiseConvTranspose`):
      the same function for FCN's per-class kernels, ``C`` times cheaper.
  """
  net: nets.Net
  num_classes: int = 21
  width_divisor: int = 1
  dtype: Any = jnp.float32
  learn_upsampling: bool = False
  dropout_rate: float = trunks.DROPOUT_RATE
  upsample_mode: str = "dense"

  # ------------------------------------------------------------------
  # What the net is: inputs, outputs, layers.
  # ------------------------------------------------------------------

  @property
  def head(self) -> heads_lib.HeadSpec:
    return self.net.head

  @property
  def multi_input(self) -> bool:
    """Whether the model takes a dict of inputs (keyed by input name)."""
    return self.net.multi_input

  @property
  def multi_head(self) -> bool:
    """Whether the model returns (and trains on) a dict keyed by head."""
    return self.net.multi_head

  @property
  def input_channels(self) -> dict[str, int]:
    """Channels of each input, by name (``{"image": 3}`` for most nets)."""
    return {i.name: i.channels for i in self.net.inputs}

  @property
  def head_classes(self) -> dict[str, int]:
    """Classes of each output, by name (``{"score": 21}`` for VOC)."""
    return self.net.output_classes(self.num_classes)

  def per_head(self, value: Any) -> dict[str, Any]:
    """Logits or labels as ``{head: array}`` (a single-head net's plain
    array under ``"score"``).

    Raises:
      ValueError: A multi-head value that is not a dict of the heads.
    """
    if not self.multi_head:
      if isinstance(value, Mapping):
        raise ValueError(f"{self.net.name} has one head: expected an array, "
                         f"got a dict with keys {sorted(value)}")
      return {nets.SINGLE_OUTPUT: value}
    if not isinstance(value, Mapping) or set(value) != set(self.head_classes):
      raise ValueError(
          f"{self.net.name} has the heads {sorted(self.head_classes)}: "
          "expected a dict keyed by them, got "
          f"{sorted(value) if isinstance(value, Mapping) else 'an array'}")
    return {name: value[name] for name in self.head_classes}

  def _streams(self, attach: bool = False) -> list[trunks.Trunk]:
    """One trunk per stream: submodules in ``__call__`` (``attach``), else
    free-standing descriptions (for the layer names)."""
    parent = {} if attach else {"parent": None}
    return [trunks.Trunk(self.net.trunk_spec, self.width_divisor, self.dtype,
                         dropout_rate=self.dropout_rate, suffix=s.suffix,
                         first_layer=s.first_layer, **parent)
            for s in self.net.streams]

  def head_layers(self) -> tuple[HeadLayer, ...]:
    """Every head layer in forward order, output by output, with the blob
    it reads (:class:`HeadLayer`; names from :meth:`Net.head_names
    <fcn_jax.models.nets.Net.head_names>`)."""
    rows = []
    classes = self.head_classes
    for output in self.net.outputs:
      c, names = classes[output.name], self.net.head_names(output)
      for name in names.score_fr:
        rows.append(HeadLayer(name, "score", None, c, "fc7"))
      fusion = self.net.fusion
      previous = fusion.layer if fusion is not None else names.score_fr[0]
      for skip, up, scale, score in zip(self.head.skips, names.upsamplers,
                                        names.scales, names.scores):
        rows.append(HeadLayer(up, "upsampler", skip.upsampler, c, previous))
        if skip.scale is not None:
          rows.append(HeadLayer(scale, "scale", skip.scale, c, skip.source))
        rows.append(HeadLayer(score, "score", None, c, skip.source))
        previous = up
      rows.append(HeadLayer(names.final, "upsampler", self.head.final, c,
                            previous))
    return tuple(rows)

  def trunk_layers(self) -> tuple[str, ...]:
    """The trunks' parameterised layers in forward order, stream by stream."""
    return tuple(name for trunk in self._streams()
                 for name in trunk.layer_names())

  def layer_names(self) -> tuple[str, ...]:
    """The parameterised layers in forward order, as the Caffe nets list
    them (color-HHA: each stream with its score_fr, then the upsampler)."""
    head = tuple(row[0] for row in self.head_layers())
    if self.net.fusion is None:
      return self.trunk_layers() + head
    streams = self._streams()
    names = ()
    for trunk, score in zip(streams, head):
      names += trunk.layer_names() + (score,)
    return names + head[len(streams):]

  def frozen_layers(self) -> tuple[str, ...]:
    """Names of layers with Caffe ``lr_mult: 0``: fixed upsamplers and scales
    (the 2x upsamplers are trained with ``learn_upsampling``)."""
    final = {self.net.head_names(o).final for o in self.net.outputs}
    names = []
    for layer, kind, _, _, _ in self.head_layers():
      if kind == "scale" or (kind == "upsampler" and (
          layer in final or not self.learn_upsampling)):
        names.append(layer)
    return tuple(names)

  def score_layers(self) -> tuple[str, ...]:
    """The classifier: every score convolution (``config.optim.trainable =
    "score"`` trains only these, FCN-32s-fixed)."""
    return tuple(row[0] for row in self.head_layers() if row[1] == "score")

  def default_bias_multiplier_layers(self) -> tuple[str, ...]:
    """Layers whose biases keep Caffe's default multipliers (lr 1, decay 1),
    like their weights: CaffeNet's trunk (docs/reference.md §2.3)."""
    if self.net.trunk_spec.default_bias_multipliers:
      return self.trunk_layers()
    return ()

  def renamed_trunk_layers(self) -> dict[str, str]:
    """Trunk layers under another name than the base net's, e.g.
    ``{"conv1_1_bgrd": "conv1_1"}`` (color-D; docs/reference.md §8.2)."""
    first = self.net.trunk_spec.first_layer
    return {s.first_layer: first for s in self.net.streams if s.first_layer}

  def reference_init(self, layer: str, shapes: Mapping[str, Sequence[int]]
                     ) -> tuple[dict[str, np.ndarray], str]:
    """How the reference starts a head layer that pretrained weights lack.

    Upsamplers get the bilinear kernel (``surgery.interp``, docs/reference.md
    §6.3), Scale layers their constant, score layers zeros (Caffe's default
    filler, §5.3).

    Args:
      layer: A head layer's name.
      shapes: Its parameter shapes, ``{"kernel": (...), ...}``.

    Returns:
      ``(leaves, note)``: float32 arrays of those shapes and how they were
      made.
    """
    rows = {row[0]: row for row in self.head_layers()}
    _, kind, what, classes, _ = rows.get(layer, (layer, "score", None, 0, ""))
    if kind == "upsampler":
      dense = layers.bilinear_kernel(what.kernel, classes)
      kernel = (layers.depthwise_kernel(dense)
                if self.upsample_mode == "depthwise" else dense)
      return {"kernel": kernel}, "bilinear"
    if kind == "scale":
      return ({"scale": np.full(tuple(shapes["scale"]), what, np.float32)},
              f"constant {what:g}")
    return ({k: np.zeros(tuple(v), np.float32) for k, v in shapes.items()},
            "zeros")

  def dummy_inputs(self, size: int = 32, batch: int = 1) -> Any:
    """Zero inputs of the right structure and channels (for ``init``)."""
    arrays = {name: jnp.zeros((batch, size, size, c), jnp.float32)
              for name, c in self.input_channels.items()}
    return arrays if self.multi_input else next(iter(arrays.values()))

  # ------------------------------------------------------------------
  # The forward pass.
  # ------------------------------------------------------------------

  def _check_inputs(self, images: Any) -> dict[str, jax.Array]:
    channels = self.input_channels
    if self.multi_input:
      if not isinstance(images, Mapping) or set(images) != set(channels):
        raise ValueError(
            f"{self.net.name} takes a dict of inputs {sorted(channels)}, got "
            f"{sorted(images) if isinstance(images, Mapping) else 'an array'}")
      inputs = dict(images)
    else:
      if isinstance(images, Mapping):
        raise ValueError(f"{self.net.name} takes one array [N, H, W, "
                         f"{next(iter(channels.values()))}], got a dict")
      inputs = {next(iter(channels)): images}
    shapes = set()
    for name, x in inputs.items():
      if x.ndim != 4 or x.shape[-1] != channels[name]:
        raise ValueError(
            f"{self.net.name}: expected NHWC input {name!r} with "
            f"{channels[name]} channels, got shape {x.shape}")
      shapes.add(x.shape[:3])
    if len(shapes) > 1:
      raise ValueError(f"{self.net.name}: inputs differ in batch or size: "
                       f"{sorted(shapes)}")
    return inputs

  def _check_sizes(self, sizes: Any, batch: int, height: int,
                   width: int) -> jax.Array:
    """``sizes`` as int32 ``[N, 2]``, its values checked when concrete."""
    if tuple(np.shape(sizes)) != (batch, 2):
      raise ValueError(f"{self.net.name}: sizes must be [N, 2] = ({batch}, 2) "
                       f"(height, width per example), got shape "
                       f"{tuple(np.shape(sizes))}")
    if not isinstance(sizes, jax.core.Tracer):
      values = np.asarray(sizes)
      if (values < 1).any() or (values > (height, width)).any():
        raise ValueError(
            f"{self.net.name}: sizes must lie in [1, {height}] x [1, {width}] "
            f"(the input's height and width), got {values.tolist()}")
    return jnp.asarray(sizes, jnp.int32)

  def _upsample(self, up: heads_lib.Upsampler, name: str, classes: int,
                x: jax.Array, blobs: dict[str, jax.Array]) -> jax.Array:
    dense = layers.bilinear_kernel(up.kernel, classes)
    if self.upsample_mode == "depthwise":
      y = layers.DepthwiseConvTranspose(
          up.kernel, up.stride,
          lambda *_: jnp.asarray(layers.depthwise_kernel(dense)), self.dtype,
          name=name)(x)
    else:
      y = nn.ConvTranspose(classes, (up.kernel, up.kernel),
                           (up.stride, up.stride), padding="VALID",
                           use_bias=False,
                           kernel_init=lambda *_: jnp.asarray(dense),
                           dtype=self.dtype, param_dtype=jnp.float32,
                           name=name)(x)
    blobs[name] = y
    return y

  def _score(self, name: str, classes: int, x: jax.Array,
             blobs: dict[str, jax.Array]) -> jax.Array:
    y = layers.caffe_conv(classes, 1, 0, name, self.dtype, zero_init=True)(x)
    blobs[name] = y
    return y

  @nn.compact
  def __call__(self, images: Any, train: bool = False,
               sizes: jax.Array | None = None) -> Any:
    """Scores every pixel.

    **Masked padding** (``sizes``): examples of different sizes can share one
    padded (bucket) shape and still get their native-size logits. Pad each
    preprocessed input at the bottom/right (with anything: the input is
    masked too) and pass each example's true (height, width). Every blob is
    then set to zero outside its native extent, computed from ``sizes`` by
    each layer's own geometry (:meth:`TrunkSpec.extents
    <fcn_jax.models.trunks.TrunkSpec.extents>`, :meth:`HeadSpec.extents
    <fcn_jax.models.heads.HeadSpec.extents>`), so that the next layer reads
    zeros where the native net reads its zero padding or nothing:

    * convolutions: Caffe pads with zeros; fc6 is VALID and never reads
      beyond its input's extent;
    * round-up max pools: a window hanging over the extent sees zeros beside
      post-ReLU values (>= 0), so its maximum is the clipped native window's;
    * ReLU, LRN (across channels only), dropout, Scale and the bias-free
      upsamplers keep zeros zero; the score layers' biases are masked before
      an upsampler reads them;
    * crops start at the top-left corner, so each skip's crop reads the
      pool's native values, and the sum is masked to the upsampled extent.

    So logits inside ``sizes`` equal the native-size logits (up to float
    rounding of a different summation order) and so do the gradients of a
    loss over those pixels; the logits beyond are zero. Dropout (training)
    draws its mask over the padded shape: the same distribution as at native
    size, not the same bits for the same rng. The masks are iota comparisons
    (no gathers) on traced sizes: one compiled program per padded shape.
    Without ``sizes`` nothing is masked and nothing is traced for it.

    Args:
      images: Preprocessed float inputs ``[N, H, W, C]`` (any H, W >= 1), or
        for a multi-input net a dict of them keyed by input name
        (:attr:`input_channels`).
      train: Enables dropout (needs a ``'dropout'`` rng).
      sizes: Optional int32 ``[N, 2]``: each example's true (height, width),
        ``1 <= height <= H``, ``1 <= width <= W``, its valid region at the
        top-left of every input plane.

    Returns:
      Float32 logits ``[N, H, W, classes]``, or for a multi-head net a dict
      of them keyed by output name (:attr:`head_classes`).
    """
    inputs = self._check_inputs(images)
    batch, height, width = next(iter(inputs.values())).shape[:3]
    extents = {}
    if sizes is not None:
      sizes = self._check_sizes(sizes, batch, height, width)
      extents = self.net.trunk_spec.extents()
      extents.update(self.head.extents(extents["fc7"]))
    blobs = {}
    features = []
    for stream, trunk in zip(self.net.streams, self._streams(attach=True)):
      nn.share_scope(trunk, self)
      stream_blobs = trunk(inputs[stream.input].astype(self.dtype), train,
                           sizes)
      blobs.update({k + stream.suffix: v for k, v in stream_blobs.items()})
      features.append(stream_blobs)
    classes = self.head_classes
    outputs = {}
    for output in self.net.outputs:
      c, names = classes[output.name], self.net.head_names(output)
      scores = [layers.mask_outside(self._score(name, c, f["fc7"], blobs),
                                    extents.get("fc7"), sizes)
                for name, f in zip(names.score_fr, features)]
      score = scores[0]
      if self.net.fusion is not None:
        fusion = self.net.fusion
        score = sum(w * s for w, s in zip(fusion.coefficients, scores))
        blobs[fusion.layer] = score
      for skip, up, scale, score_layer in zip(
          self.head.skips, names.upsamplers, names.scales, names.scores):
        upscored = self._upsample(skip.upsampler, up, c, score, blobs)
        pooled = features[0][skip.source]
        if skip.scale is not None:
          pooled = layers.Scale(skip.scale, self.dtype, name=scale)(pooled)
        cropped = layers.crop_like(
            self._score(score_layer, c, pooled, blobs),
            skip.offset, upscored.shape[1], upscored.shape[2])
        blobs[score_layer + "c"] = cropped
        score = layers.mask_outside(upscored + cropped,
                                    extents.get(skip.upsampler.name), sizes)
      score = self._upsample(self.head.final, names.final, c, score, blobs)
      score = layers.crop_like(score, self.head.final_offset, height, width)
      score = layers.mask_outside(score, layers.Extent(), sizes)
      blobs["score" + output.suffix] = score
      outputs[output.name] = score.astype(jnp.float32)
    # Every named blob, for inspection: apply(..., mutable=["intermediates"]).
    self.sow("intermediates", "blobs", blobs)
    return outputs if self.multi_head else outputs[nets.SINGLE_OUTPUT]
