"""Shape buckets: native-size results at a few compiled shapes.

The reference trains, evaluates and predicts every image at its own size,
and XLA compiles a program per distinct shape (PASCAL VOC has hundreds). The
nets take each example's true size (``model.apply(..., sizes=[N, 2])``) and
mask every layer outside that example's true extent, so an image zero-padded
at the bottom/right (after preprocessing) to a larger *bucket* gives, inside
its true extent, exactly the logits of its native-size run. This module picks
the buckets and assigns images to them; the pipeline pads, the steps pass the
sizes.

``config.input.buckets``:

* ``"auto"`` (the default): at most ``config.input.max_buckets`` sizes chosen
  from the split's size histogram (:func:`choose_buckets`) to minimise the
  padded pixels;
* ``"HxW,HxW,..."`` (or a sequence of ``(H, W)``): these sizes; every image of
  the split must fit one;
* ``"none"`` (or empty): the old per-shape path, one compile per distinct
  size (batch 1 per host). Test-time augmentation (flips, scales) and
  shift-and-stitch need it: they move or resample the padded margin.

A batch runs at the smallest bucket (by area, then height) that fits every
image of it (:func:`smallest_fitting`), computed from the sizes table alone,
so every host picks the same bucket for a global batch without
communicating.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Iterable, Sequence

from absl import logging
import numpy as np

from fcn_jax import errors
from fcn_jax.datasets import common

AUTO = "auto"
NONE = "none"
DEFAULT_MAX_BUCKETS = 4
# choose_buckets considers bucket sides among this many most frequent heights
# (and widths) of the split.
MAX_SIDES = 64
# choose_buckets searches every set of buckets when that costs at most this
# many (candidate, size) evaluations.
EXACT_SEARCH_LIMIT = 20_000_000
# Beyond that, its local search also swaps two buckets at once when that
# costs at most this many evaluations per round.
TWO_SWAP_LIMIT = 20_000_000
Bucket = tuple[int, int]


def parse_size(text: Any, what: str, *, square: bool = False) -> Bucket:
  """``"HxW"`` as ``(H, W)``: the project's one parser of image sizes.

  Args:
    text: ``"384x512"`` (or, with ``square``, one side ``"500"`` for
      500x500).
    what: The flag or field it came from, for the message.
    square: Also accept one side.

  Raises:
    errors.UserError: Anything but positive whole numbers, naming ``what``.
  """
  parts = str(text).strip().lower().split("x")
  try:
    sides = [int(part) for part in parts]
  except ValueError:
    sides = []
  if square and len(sides) == 1:
    sides *= 2
  if len(sides) != 2 or min(sides) < 1:
    one_side = "one side such as 500 or " if square else ""
    raise errors.UserError(
        f"{what}: {str(text)!r} is not a size; give {one_side}HxW with "
        "positive whole numbers, such as 384x512")
  return sides[0], sides[1]


def parse_sizes(text: str, what: str) -> tuple[Bucket, ...]:
  """``"HxW,HxW,..."`` as distinct ``(H, W)`` sorted by area (then height).

  Raises:
    errors.UserError: An item that is not a size (:func:`parse_size`).
  """
  sizes = {parse_size(item, what) for item in str(text).split(",")}
  return tuple(sorted(sizes, key=lambda s: (s[0] * s[1], s)))


def parse(value: Any, what: str = "config.input.buckets"
          ) -> str | tuple[Bucket, ...]:
  """``config.input.buckets`` as ``"auto"``, ``"none"`` or sizes.

  Args:
    value: ``"auto"``, ``"none"``/``""``/``()``, ``"375x500,500x375"`` or a
      sequence of ``(H, W)``.
    what: The flag or field it came from, for the message.

  Returns:
    :data:`AUTO`, :data:`NONE` or a tuple of ``(H, W)`` sorted by area.

  Raises:
    errors.UserError: Anything else, naming ``what`` and the accepted forms.
  """
  if value is None or (not isinstance(value, str) and not len(value)):
    return NONE
  if isinstance(value, str):
    text = value.strip().lower()
    if text in (AUTO, NONE, ""):
      return text or NONE
    items: Sequence[Any] = text.split(",")
  else:
    items = ["x".join(str(v) for v in item) if isinstance(item, Sequence)
             and not isinstance(item, str) else item for item in value]
  try:
    return parse_sizes(",".join(str(item) for item in items), what)
  except errors.UserError:
    raise errors.UserError(
        f"{what} must be 'auto', 'none' or sizes such as '375x500,500x375' "
        f"(positive H x W), got {value!r}.") from None


def smallest_fitting(height: int, width: int, buckets: Sequence[Bucket]
                     ) -> Bucket | None:
  """The smallest bucket (by area, then height) with ``H >= height`` and
  ``W >= width``; None when none fits."""
  fitting = [(h * w, h, w) for h, w in buckets if h >= height and w >= width]
  if not fitting:
    return None
  _, h, w = min(fitting)
  return h, w


def bucket_of_batch(sizes: np.ndarray, buckets: Sequence[Bucket]) -> Bucket:
  """The bucket a batch of examples of ``sizes`` (``[n, 2]``) runs at: the
  smallest that fits every one of them.

  Raises:
    errors.UserError: No bucket fits (explicit buckets smaller than an image).
  """
  sizes = np.asarray(sizes).reshape(-1, 2)
  height, width = (int(v) for v in sizes.max(axis=0))
  bucket = smallest_fitting(height, width, buckets)
  if bucket is None:
    raise errors.UserError(
        f"an image of {height}x{width} fits none of the buckets {list(buckets)}"
        " (config.input.buckets): add a larger one, or use 'auto'.")
  return bucket


def assign(sizes: np.ndarray, buckets: Sequence[Bucket]) -> np.ndarray:
  """Index into ``buckets`` of each example's smallest fitting bucket
  (``[n]`` int; -1 where none fits)."""
  sizes = np.asarray(sizes).reshape(-1, 2)
  out = np.full(len(sizes), -1, np.int64)
  best_area = np.full(len(sizes), np.inf)
  order = sorted(range(len(buckets)),
                 key=lambda i: (buckets[i][0] * buckets[i][1], buckets[i]))
  for i in order:
    h, w = buckets[i]
    fits = (sizes[:, 0] <= h) & (sizes[:, 1] <= w) & (h * w < best_area)
    out[fits] = i
    best_area[fits] = h * w
  return out


def padding_overhead(sizes: np.ndarray, buckets: Sequence[Bucket]) -> float:
  """Padded pixels over image pixels when each image runs alone at its
  smallest fitting bucket (0.1 = 10% more pixels than native size)."""
  sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
  index = assign(sizes, buckets)
  if (index < 0).any():
    raise ValueError("some images fit no bucket")
  areas = np.asarray([h * w for h, w in buckets], np.int64)[index]
  pixels = (sizes[:, 0] * sizes[:, 1]).sum()
  return float((areas.sum() - pixels) / max(pixels, 1))


def _frequent(values: np.ndarray, limit: int) -> np.ndarray:
  """The ``limit`` most frequent of ``values`` (ties: larger first), always
  with the largest, sorted."""
  unique, counts = np.unique(values, return_counts=True)
  keep = np.lexsort((-unique, -counts))[:limit]
  return np.union1d(unique[keep], unique[-1:])


def _candidates(distinct: np.ndarray, heights: np.ndarray,
                widths: np.ndarray) -> np.ndarray:
  """The ``(h, w)`` pairs of ``heights x widths`` worth considering as a
  bucket: those that are some group's (max height, max width), i.e. an image
  has height ``h`` and width at most ``w``, and one has width ``w`` and
  height at most ``h`` (any other pair shrinks to such a one, or to a
  smaller pair, without losing an image). ``[m, 2]``."""
  pairs = np.stack(np.meshgrid(heights, widths, indexing="ij"),
                   -1).reshape(-1, 2)
  tight_h = ((distinct[None, :, 0] == pairs[:, None, 0])
             & (distinct[None, :, 1] <= pairs[:, None, 1])).any(1)
  tight_w = ((distinct[None, :, 1] == pairs[:, None, 1])
             & (distinct[None, :, 0] <= pairs[:, None, 0])).any(1)
  largest = (pairs[:, 0] == heights[-1]) & (pairs[:, 1] == widths[-1])
  return pairs[(tight_h & tight_w) | largest]


def choose_buckets(sizes: np.ndarray, max_buckets: int = DEFAULT_MAX_BUCKETS,
                   include_largest: bool = False) -> tuple[Bucket, ...]:
  """At most ``max_buckets`` buckets that hold every size with the fewest
  padded pixels.

  Method: the padded pixels are those of each image at its smallest fitting
  bucket (weighted by how many images have its size), and a set that leaves
  an image without a bucket costs more than any set that holds them all, so
  every image always fits. A bucket need only be some group of images'
  (max height, max width) (shrinking it to that never adds padding), so
  those pairs of the split's sides are the candidates (:func:`_candidates`;
  the sides limited to the :data:`MAX_SIDES` most frequent heights and
  widths: all of them in small splits; VOC has a few hundred, most seen
  once). The largest bucket is *not* forced to be (max height, max width):
  when no image has both, two smaller buckets can hold them all. When the
  candidate sets are few (:data:`EXACT_SEARCH_LIMIT`), every set is tried:
  the result is optimal. Otherwise greedy forward selection from (max
  height, max width) adds, one at a time, the candidate that removes the
  most padded pixels; then a local search swaps any bucket (the largest
  included) for any candidate while that lowers the padding, until no swap
  does (for VOC's size mix it finds 333x500, 375x500, 500x375, 500x500). It
  costs a few array passes over ``distinct sizes x candidates``: well under a
  second for VOC's ~500 sizes. A bucket no image would use is dropped.

  Args:
    sizes: ``[n, 2]`` (height, width) of every image of the split.
    max_buckets: At most this many buckets (>= 1).
    include_largest: Always keep (max height, max width). Training needs it
      when a batch holds several images: a batch's bucket must hold the
      largest height and the largest width among its images, which two
      smaller buckets need not.

  Returns:
    The buckets, sorted by area.
  """
  if max_buckets < 1:
    raise errors.UserError(f"config.input.max_buckets must be >= 1, got "
                           f"{max_buckets}.")
  sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
  if not len(sizes):
    raise ValueError("cannot choose buckets for an empty split")
  distinct, counts = np.unique(sizes, axis=0, return_counts=True)
  heights = _frequent(sizes[:, 0], MAX_SIDES)
  widths = _frequent(sizes[:, 1], MAX_SIDES)
  candidates = _candidates(distinct, heights, widths)
  areas = candidates[:, 0] * candidates[:, 1]
  # The cost of an image without a bucket: more than every image padded to
  # the largest candidate, and no overflow when summed.
  none = np.iinfo(np.int64).max // (4 * max(int(counts.sum()), 1))

  def totals(best: np.ndarray) -> np.ndarray:
    """Padded-pixel cost of ``best`` plus each candidate (chunked: memory
    stays small for VOC's ~40k candidates x ~500 sizes)."""
    out = np.empty(len(candidates), np.int64)
    for start in range(0, len(candidates), 1024):
      cand = candidates[start:start + 1024]
      fits = ((cand[:, None, 0] >= distinct[None, :, 0])
              & (cand[:, None, 1] >= distinct[None, :, 1]))
      area = np.where(fits, areas[start:start + 1024, None], none)
      out[start:start + 1024] = (np.minimum(area, best[None, :])
                                 * counts).sum(1)
    return out

  def cost_of(index: int) -> np.ndarray:
    h, w = candidates[index]
    return np.where((distinct[:, 0] <= h) & (distinct[:, 1] <= w),
                    areas[index], none)

  def cost_without(chosen: Sequence[int]) -> np.ndarray:
    return functools.reduce(np.minimum, [cost_of(c) for c in chosen],
                            np.full(len(distinct), none))

  count = min(max_buckets, len(candidates))
  largest = int(np.flatnonzero((candidates[:, 0] == heights[-1])
                               & (candidates[:, 1] == widths[-1]))[0])
  fixed = (largest,) if include_largest else ()
  if count == len(fixed):
    chosen = list(fixed)
  elif (math.comb(len(candidates), count - 1) * len(candidates)
        * len(distinct)) <= EXACT_SEARCH_LIMIT:
    # Few candidates: every set of buckets (the last one vectorised).
    chosen, found_cost = [], None
    for rest in itertools.combinations(range(len(candidates)),
                                       count - 1 - len(fixed)):
      prefix = (*fixed, *rest)
      scores = totals(cost_without(prefix))
      pick = int(np.argmin(scores))
      if found_cost is None or scores[pick] < found_cost:
        chosen, found_cost = [*prefix, pick], scores[pick]
  else:
    chosen = [largest]
    best = cost_of(chosen[0])
    while len(chosen) < count:
      scores = totals(best)
      pick = int(np.argmin(scores))
      if scores[pick] >= (best * counts).sum():
        break
      chosen.append(pick)
      best = np.minimum(best, cost_of(pick))
    current = int((best * counts).sum())
    pairs = math.comb(len(chosen), 2)
    two_swaps = (pairs * len(candidates) ** 2 * len(distinct)
                 <= TWO_SWAP_LIMIT)
    improved = True
    while improved and len(chosen) > 1:
      improved = False
      # Swap one bucket for the best candidate...
      for slot in range(len(fixed), len(chosen)):
        scores = totals(cost_without(
            [c for i, c in enumerate(chosen) if i != slot]))
        pick = int(np.argmin(scores))
        if scores[pick] < current:
          chosen[slot], current, improved = pick, int(scores[pick]), True
      if improved or not two_swaps:
        continue
      # ... and, where that is cheap, two buckets at once.
      for i, j in itertools.combinations(range(len(fixed), len(chosen)), 2):
        rest = cost_without([c for k, c in enumerate(chosen)
                             if k not in (i, j)])
        for first in range(len(candidates)):
          scores = totals(np.minimum(rest, cost_of(first)))
          pick = int(np.argmin(scores))
          if scores[pick] < current:
            chosen[i], chosen[j] = first, pick
            current, improved = int(scores[pick]), True
  found = {(int(candidates[c][0]), int(candidates[c][1])) for c in chosen}
  found = tuple(sorted(found, key=lambda s: (s[0] * s[1], s)))
  used = set(np.unique(assign(distinct, found)).tolist())
  if include_largest:
    used.add(found.index((int(heights[-1]), int(widths[-1]))))
  return tuple(found[i] for i in sorted(used))


def read_sizes(records: Sequence[dict[str, Any]]) -> np.ndarray:
  """``[n, 2]`` int32 (height, width) of every record of a split.

  Every builder stores ``height`` and ``width``; the records keep their
  images encoded, so this reads each record once without decoding pixels.
  """
  n = len(records)
  out = np.zeros((n, 2), np.int32)
  get_many = getattr(records, "__getitems__", None)
  chunk = 256
  for start in range(0, n, chunk):
    indices = list(range(start, min(n, start + chunk)))
    batch = (get_many(indices) if get_many is not None
             else [records[i] for i in indices])
    for i, record in zip(indices, batch):
      out[i] = (int(record[common.HEIGHT]), int(record[common.WIDTH]))
  return out


def resolve(value: Any, max_buckets: int, sizes: np.ndarray,
            description: str = "the split", batches_mix_sizes: bool = False
            ) -> tuple[Bucket, ...] | None:
  """The buckets of ``config.input.buckets`` for a split; None for
  ``"none"`` (the per-shape path). Logs them with their padding overhead.

  Raises:
    errors.UserError: Explicit buckets that some image of the split does not
      fit.
  """
  parsed = parse(value)
  if parsed == NONE:
    return None
  sizes = np.asarray(sizes).reshape(-1, 2)
  largest = (int(sizes[:, 0].max()), int(sizes[:, 1].max()))
  if parsed == AUTO:
    chosen = choose_buckets(sizes, max_buckets,
                            include_largest=batches_mix_sizes)
  else:
    chosen = parsed
    if batches_mix_sizes and assign(np.array([largest]), chosen)[0] < 0:
      raise errors.UserError(
          f"config.input.buckets={value!r}: a training batch of several "
          f"images needs a bucket that holds {description}'s largest height "
          f"and width together ({largest[0]}x{largest[1]}): add it, or use "
          "'auto'.")
    unfit = assign(sizes, chosen) < 0
    if unfit.any():
      big = sizes[unfit]
      raise errors.UserError(
          f"config.input.buckets={value!r}: {int(unfit.sum())} image(s) of "
          f"{description} fit no bucket (e.g. {big[0][0]}x{big[0][1]}; the "
          f"split's largest is {sizes[:, 0].max()}x{sizes[:, 1].max()}): add a "
          "bucket at least that large, or use 'auto'.")
  distinct = len(np.unique(sizes, axis=0))
  logging.info(
      "Buckets for %s (%d images, %d distinct sizes): %s; padding overhead "
      "%.1f%% of the image pixels.", description, len(sizes), distinct,
      ", ".join(f"{h}x{w}" for h, w in chosen),
      100 * padding_overhead(sizes, chosen))
  return chosen
