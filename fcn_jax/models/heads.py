"""The heads: the one table that says how each FCN turns fc7 into scores.

Every head scores fc7 with ``score_fr`` and then repeats one step per skip:
upsample the coarse scores 2x, score a finer pool blob, crop it at its offset
and add. A final upsampler and crop restore the input size. The heads differ
only in their :class:`HeadSpec`: layer names, kernel sizes and crop offsets
(docs/reference.md §2.2, §2.3, §3).

A net may carry a head more than once (SIFT Flow's ``_sem`` and ``_geo``
heads) or feed it the fused scores of two trunks (NYUD color-HHA); that
composition is :mod:`fcn_jax.models.nets`' business.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from fcn_jax.models import layers

SCORE_LAYER = "score_fr"


@dataclasses.dataclass(frozen=True)
class Upsampler:
  """A Caffe ``Deconvolution(kernel, stride)`` with a fixed bilinear init."""
  name: str
  kernel: int
  stride: int


@dataclasses.dataclass(frozen=True)
class Skip:
  """One fusion step: ``upsample(score) + crop(score_layer(source), offset)``.

  Attributes:
    upsampler: The 2x upsampler applied to the coarser scores.
    source: The trunk blob the skip reads (``pool4`` or ``pool3``).
    score_layer: Name of the 1x1 scoring convolution on ``source``.
    offset: Crop offset of the scored skip in the upsampled grid (§3).
    scale: A fixed per-channel Scale constant before scoring (at-once only).
  """
  upsampler: Upsampler
  source: str
  score_layer: str
  offset: int
  scale: float | None = None

  @property
  def scale_layer(self) -> str:
    return "scale_" + self.source


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """The skip steps and the final upsample-and-crop of one FCN variant."""
  skips: tuple[Skip, ...]
  final: Upsampler
  final_offset: int

  @property
  def stride(self) -> int:
    """The output stride of the scores before the final upsampler."""
    return self.final.stride

  def upsamplers(self) -> tuple[Upsampler, ...]:
    return tuple(s.upsampler for s in self.skips) + (self.final,)

  def extents(self, score: layers.Extent) -> dict[str, layers.Extent]:
    """The native extent of each upsampler's output, keyed by its name.

    Each skip's sum has its upsampler's extent: inside it the crop (at the
    reference offset from the top-left corner, valid for every input size,
    docs/reference.md §3) reads the skip's native values; beyond it, it
    would add skip values that the native crop cuts away, so the sum is
    masked to this extent.

    Args:
      score: The extent of ``score_fr`` (fc7's,
        :meth:`~fcn_jax.models.trunks.TrunkSpec.extents`).
    """
    extents = {}
    for up in self.upsamplers():
      score = score.upsample(up.kernel, up.stride)
      extents[up.name] = score
    return extents


_UPSCORE2 = Upsampler("upscore2", 4, 2)
_UPSCORE_POOL4 = Upsampler("upscore_pool4", 4, 2)

# Keyed by the VOC net that uses each head; the other families reuse them
# with their own class counts (docs/reference.md §3, last paragraph).
HEADS: Mapping[str, HeadSpec] = {
    "fcn32s": HeadSpec(skips=(), final=Upsampler("upscore", 64, 32),
                       final_offset=19),
    "fcn16s": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5),),
        final=Upsampler("upscore16", 32, 16), final_offset=27),
    "fcn8s": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5),
               Skip(_UPSCORE_POOL4, "pool3", "score_pool3", 9)),
        final=Upsampler("upscore8", 16, 8), final_offset=31),
    "fcn8s_atonce": HeadSpec(
        skips=(Skip(_UPSCORE2, "pool4", "score_pool4", 5, scale=0.01),
               Skip(_UPSCORE_POOL4, "pool3", "score_pool3", 9, scale=1e-4)),
        final=Upsampler("upscore8", 16, 8), final_offset=31),
    # CaffeNet: Deconv(63, 32) and the crop at 18 (§2.3, §3).
    "fcn_alexnet": HeadSpec(skips=(), final=Upsampler("upscore", 63, 32),
                            final_offset=18),
}
