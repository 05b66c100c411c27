"""The reference nets by name: trunk, head, inputs, streams and outputs.

Each :class:`Net` is one folder of the reference repository
(docs/reference.md §1) described by composition:

* **inputs**: what the net is fed. Most take one ``[N, H, W, 3]`` array
  (``image``); NYUD color-D one 4-channel array (BGR and log-depth
  concatenated); NYUD color-HHA a dict of two arrays, ``color`` and ``hha``.
  Each input lists the dataset features it is made of (``sources``), in
  channel order.
* **streams**: one trunk per stream, reading one input. color-HHA has two,
  their layer names suffixed ``color`` and ``hha``; color-D renames
  ``conv1_1`` to ``conv1_1_bgrd``.
* **outputs**: one head per output. SIFT Flow has two complete heads,
  ``sem`` (33 classes) and ``geo`` (3), their layer names suffixed ``_sem``
  and ``_geo``; the model then returns a dict keyed by output name.
* **fusion**: color-HHA sums its streams' ``score_fr`` with coefficients 0.5
  and 0.5 (``score_fused``) before the one shared upsampler (§4.7, §8.2).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from fcn_jax.models import heads as heads_lib
from fcn_jax.models import trunks

# The dataset features a model input can be made of (the TFDS feature names
# of fcn_jax.datasets: the colour image, NYUD's HHA and raw depth).
IMAGE, HHA, DEPTH = "image", "hha", "depth"
SOURCE_CHANNELS = {IMAGE: 3, HHA: 3, DEPTH: 1}
# The name of the only output of a single-head net (its Caffe blob, `score`).
SINGLE_OUTPUT = "score"


@dataclasses.dataclass(frozen=True)
class Input:
  """One model input.

  Attributes:
    name: Its key in a batch's ``image`` dict (``image`` when it is the
      net's only input and the batch holds a plain array).
    sources: The dataset features concatenated along channels, in order.
  """
  name: str = IMAGE
  sources: tuple[str, ...] = (IMAGE,)

  @property
  def channels(self) -> int:
    return sum(SOURCE_CHANNELS[s] for s in self.sources)


@dataclasses.dataclass(frozen=True)
class Stream:
  """One trunk and the input it reads.

  Attributes:
    input: The :class:`Input` name.
    suffix: Appended to every layer name of the stream and to its score_fr.
    first_layer: Another name for the trunk's first convolution.
  """
  input: str = IMAGE
  suffix: str = ""
  first_layer: str = ""


@dataclasses.dataclass(frozen=True)
class Output:
  """One head.

  Attributes:
    name: The key of its logits and labels (``score`` for a single-head
      net, whose logits and labels are plain arrays).
    suffix: Appended to every layer (and blob) name of the head.
    num_classes: A fixed class count; ``None`` takes the model's
      ``num_classes``.
  """
  name: str = SINGLE_OUTPUT
  suffix: str = ""
  num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class Fusion:
  """Eltwise SUM of the streams' score_fr with coefficients (late fusion)."""
  layer: str
  coefficients: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class HeadNames:
  """The layer names of one output's head (the one place they are formed).

  Attributes:
    score_fr: The score layer on each stream's fc7, in stream order.
    upsamplers: Each skip's 2x upsampler.
    scales: Each skip's Scale layer (used by the at-once head only).
    scores: Each skip's score layer.
    final: The final upsampler.
  """
  score_fr: tuple[str, ...]
  upsamplers: tuple[str, ...]
  scales: tuple[str, ...]
  scores: tuple[str, ...]
  final: str


@dataclasses.dataclass(frozen=True)
class Net:
  """One reference net (a folder of the reference repository).

  Attributes:
    name: The fcn_jax name (``create_model(name)``).
    folder: The reference folder.
    trunk: ``vgg16`` or ``caffenet`` (:data:`fcn_jax.models.trunks.TRUNKS`).
    head: The :class:`~fcn_jax.models.heads.HeadSpec` of every output.
    num_classes: The reference class count of the first output.
    inputs: What the net reads.
    streams: One trunk each.
    outputs: One head each.
    fusion: How several streams' scores combine (required for two streams).
    dataset: The fcn_jax dataset it was trained on.
    preprocessing: The :mod:`fcn_jax.data.preprocessing` preset of its colour
      input, as its data layer prepares it.
    released: The released weights file (``""``: none).
  """
  name: str
  folder: str
  trunk: str
  head: heads_lib.HeadSpec
  num_classes: int
  inputs: tuple[Input, ...] = (Input(),)
  streams: tuple[Stream, ...] = (Stream(),)
  outputs: tuple[Output, ...] = (Output(),)
  fusion: Fusion | None = None
  dataset: str = "voc_seg"
  preprocessing: str = "caffe_vgg"
  released: str = ""

  def __post_init__(self):
    names = [i.name for i in self.inputs]
    if any(s.input not in names for s in self.streams):
      raise ValueError(f"{self.name}: a stream reads an unknown input")
    if (len(self.streams) > 1) != (self.fusion is not None):
      raise ValueError(f"{self.name}: several streams need a fusion")
    if self.fusion is not None and (
        self.head.skips or len(self.outputs) > 1
        or len(self.fusion.coefficients) != len(self.streams)):
      raise ValueError(f"{self.name}: late fusion fuses the score_fr of each "
                       "stream of a one-output, skip-free head")
    if self.trunk not in trunks.TRUNKS:
      raise ValueError(f"{self.name}: unknown trunk {self.trunk!r}")

  @property
  def trunk_spec(self) -> trunks.TrunkSpec:
    return trunks.TRUNKS[self.trunk]

  @property
  def multi_input(self) -> bool:
    """Whether a batch's ``image`` is a dict keyed by input name."""
    return len(self.inputs) > 1

  @property
  def multi_head(self) -> bool:
    """Whether logits and labels are dicts keyed by output name."""
    return len(self.outputs) > 1

  def head_names(self, output: Output) -> HeadNames:
    """The Caffe names of ``output``'s head layers: the head table's, with
    the output's suffix (and each stream's before it on ``score_fr``)."""
    skips, suffix = self.head.skips, output.suffix
    return HeadNames(
        tuple(heads_lib.SCORE_LAYER + s.suffix + suffix
              for s in self.streams),
        tuple(k.upsampler.name + suffix for k in skips),
        tuple(k.scale_layer + suffix for k in skips),
        tuple(k.score_layer + suffix for k in skips),
        self.head.final.name + suffix)

  def output_classes(self, num_classes: int) -> dict[str, int]:
    """Each output's class count, given the model's ``num_classes``."""
    return {o.name: o.num_classes or num_classes for o in self.outputs}


_HEADS = heads_lib.HEADS
_NYUD = dict(num_classes=40, dataset="nyud", preprocessing="nyud")
_SIFT_FLOW = dict(
    num_classes=33, dataset="sift_flow", preprocessing="sift_flow",
    outputs=(Output("sem", "_sem"), Output("geo", "_geo", num_classes=3)))
_CONTEXT = dict(num_classes=60, dataset="pascal_context",
                preprocessing="pascal_context")


def _table(*nets: Net) -> Mapping[str, Net]:
  return {n.name: n for n in nets}


# docs/reference.md §1, §2, §8.2-§8.4.
NETS: Mapping[str, Net] = _table(
    Net("fcn32s", "voc-fcn32s", "vgg16", _HEADS["fcn32s"], 21,
        released="fcn32s-heavy-pascal.caffemodel"),
    Net("fcn16s", "voc-fcn16s", "vgg16", _HEADS["fcn16s"], 21,
        released="fcn16s-heavy-pascal.caffemodel"),
    Net("fcn8s", "voc-fcn8s", "vgg16", _HEADS["fcn8s"], 21,
        released="fcn8s-heavy-pascal.caffemodel"),
    Net("fcn8s_atonce", "voc-fcn8s-atonce", "vgg16", _HEADS["fcn8s_atonce"],
        21, released="fcn8s-atonce-pascal.caffemodel"),
    Net("fcn_alexnet", "voc-fcn-alexnet", "caffenet", _HEADS["fcn_alexnet"],
        21, released="fcn-alexnet-pascal.caffemodel"),
    Net("nyud_fcn32s_color", "nyud-fcn32s-color", "vgg16", _HEADS["fcn32s"],
        released="nyud-fcn32s-color-heavy.caffemodel", **_NYUD),
    Net("nyud_fcn32s_hha", "nyud-fcn32s-hha", "vgg16", _HEADS["fcn32s"],
        inputs=(Input(sources=(HHA,)),),
        released="nyud-fcn32s-hha-heavy.caffemodel", **_NYUD),
    Net("nyud_fcn32s_color_d", "nyud-fcn32s-color-d", "vgg16",
        _HEADS["fcn32s"], inputs=(Input(sources=(IMAGE, DEPTH)),),
        streams=(Stream(first_layer="conv1_1_bgrd"),), **_NYUD),
    Net("nyud_fcn32s_color_hha", "nyud-fcn32s-color-hha", "vgg16",
        _HEADS["fcn32s"],
        inputs=(Input("color", (IMAGE,)), Input("hha", (HHA,))),
        streams=(Stream("color", "color"), Stream("hha", "hha")),
        fusion=Fusion("score_fused", (0.5, 0.5)),
        released="nyud-fcn32s-color-hha-heavy.caffemodel", **_NYUD),
    Net("siftflow_fcn32s", "siftflow-fcn32s", "vgg16", _HEADS["fcn32s"],
        released="siftflow-fcn32s-heavy.caffemodel", **_SIFT_FLOW),
    Net("siftflow_fcn16s", "siftflow-fcn16s", "vgg16", _HEADS["fcn16s"],
        released="siftflow-fcn16s-heavy.caffemodel", **_SIFT_FLOW),
    Net("siftflow_fcn8s", "siftflow-fcn8s", "vgg16", _HEADS["fcn8s"],
        released="siftflow-fcn8s-heavy.caffemodel", **_SIFT_FLOW),
    Net("pascalcontext_fcn32s", "pascalcontext-fcn32s", "vgg16",
        _HEADS["fcn32s"], released="pascalcontext-fcn32s-heavy.caffemodel",
        **_CONTEXT),
    Net("pascalcontext_fcn16s", "pascalcontext-fcn16s", "vgg16",
        _HEADS["fcn16s"], released="pascalcontext-fcn16s-heavy.caffemodel",
        **_CONTEXT),
    Net("pascalcontext_fcn8s", "pascalcontext-fcn8s", "vgg16",
        _HEADS["fcn8s"], released="pascalcontext-fcn8s-heavy.caffemodel",
        **_CONTEXT),
)
MODEL_NAMES = tuple(NETS)
