"""Sliding-window inference for images larger than memory allows.

The image is tiled by windows ``window`` high and wide, ``stride`` apart, the
last row and column of windows flush with the bottom and right edges, so
every pixel is covered (:func:`tile_starts`). Each window is preprocessed on
its own, the windows are scored in batches of ``batch_size`` by a given
function of preprocessed images (a jitted FCN, with test-time augmentation
inside it if wanted), and the logits of overlapping windows are averaged.
Several inputs of one size (a mapping of images) are cut at the same
windows, and several heads (a mapping of logits) are averaged each on its
own. :class:`fcn_jax.inference.predictor.Predictor` (``mode="slide"``) runs FCNs this
way.

Memory is bounded by the window, the batch and the image WIDTH, not the
image: windows are visited row by row, and a band of ``window`` output rows
accumulates their logits; once no later window reaches a row it is final and
leaves the band, reduced to labels (or copied into the full logits when they
are asked for). Beside the input image and the output, the peak is about
``batch_size`` preprocessed windows, their logits, and the band
(``window x width x classes`` float32, classes summed over the heads).

An image smaller than the window (in either direction) is padded at the
bottom/right to the window with zeros AFTER preprocessing (the mean colour,
as ``inference``'s fast mode and the network's own 100-pixel pad do), so
every batch has one shape and the function compiles once; the padded output
is cropped away. ``pad_to_window=False`` runs such an image at its own size
instead: then a window that covers the whole image gives exactly the
whole-image logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from fcn_jax import errors

LogitsFn = Callable[[Any], Any]


def tile_starts(size: int, window: int, stride: int) -> tuple[int, ...]:
  """Where the windows along one axis start: ``0, stride, 2 stride, ...`` and
  one flush with the end, so that ``[0, size)`` is covered.

  Args:
    size: The image's extent along the axis.
    window: The window's extent (a window larger than the image starts at 0
      only).
    stride: Distance between window starts, ``1 <= stride <= window`` (a
      larger stride would leave gaps).

  Returns:
    The sorted, distinct starts.
  """
  if size < 1 or window < 1:
    raise errors.UserError(f"size and window must be >= 1, got {size}, "
                           f"{window}")
  if not 1 <= stride <= window:
    raise errors.UserError(f"stride must be in [1, window={window}] so that "
                           f"the windows overlap or touch, got {stride}")
  if size <= window:
    return (0,)
  starts = list(range(0, size - window + 1, stride))
  if starts[-1] + window < size:
    starts.append(size - window)
  return tuple(starts)


def coverage(size: int, window: int, starts: tuple[int, ...]) -> np.ndarray:
  """How many windows cover each position along one axis (``int32``)."""
  counts = np.zeros(size, np.int32)
  for start in starts:
    counts[start:start + window] += 1
  return counts


@dataclasses.dataclass(frozen=True)
class Tiling:
  """The windows over a ``height x width`` image.

  Attributes:
    height: Image height.
    width: Image width.
    window: ``(window_height, window_width)`` of each tile (the run shape).
    rows: Start rows of the windows.
    cols: Start columns of the windows.
  """

  height: int
  width: int
  window: tuple[int, int]
  rows: tuple[int, ...]
  cols: tuple[int, ...]

  @classmethod
  def create(cls, height: int, width: int, window: int | tuple[int, int],
             stride: int | tuple[int, int], pad_to_window: bool = True
             ) -> "Tiling":
    window = (window, window) if isinstance(window, int) else tuple(window)
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if not pad_to_window:  # Small images run at their own size.
      window = (min(window[0], height), min(window[1], width))
      stride = (min(stride[0], window[0]), min(stride[1], window[1]))
    return cls(height, width, window,
               tile_starts(height, window[0], stride[0]),
               tile_starts(width, window[1], stride[1]))

  @property
  def num_tiles(self) -> int:
    return len(self.rows) * len(self.cols)

  def tiles(self) -> Iterator[tuple[int, int]]:
    """``(top, left)`` of every window, row by row."""
    for top in self.rows:
      for left in self.cols:
        yield top, left


def _batches(tiling: Tiling, batch_size: int
             ) -> Iterator[list[tuple[int, int]]]:
  batch = []
  for tile in tiling.tiles():
    batch.append(tile)
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def _as_dict(tree: Any) -> dict[Any, np.ndarray]:
  """A mapping as a dict, anything else as ``{None: it}``."""
  return dict(tree) if isinstance(tree, Mapping) else {None: tree}


def _like(tree: Any, values: dict[Any, Any]) -> Any:
  """``values`` in the structure of ``tree`` (see :func:`_as_dict`)."""
  return values if isinstance(tree, Mapping) else values[None]


def sliding_window_inference(
    image: Any, logits_fn: LogitsFn, window: int | tuple[int, int],
    stride: int | tuple[int, int], *,
    preprocess: Callable[[Any], Any] | None = None,
    batch_size: int = 4, pad_to_window: bool = True,
    return_logits: bool = False) -> Any:
  """Labels (or logits) of one large image from overlapping windows.

  Several inputs (a mapping of images of one size, e.g. colour and depth) and
  several heads (``logits_fn`` returning a mapping of logits) are windowed
  alike: each head's logits are averaged on their own.

  Args:
    image: ``[H, W, C]`` pixels (e.g. uint8 RGB), or a mapping of ``[H, W]``
      or ``[H, W, C]`` arrays of one ``H x W``.
    logits_fn: Preprocessed windows ``float32 [B, h, w, C]`` (a mapping of
      them when ``preprocess`` returns one) -> logits ``[B, h, w, K]`` or a
      mapping of them (one per head); always called with ``B = batch_size``
      and one ``(h, w)``, so a jitted function compiles once.
    window: Window size, an int or ``(height, width)``.
    stride: Distance between windows, an int or ``(rows, cols)``; at most
      the window (e.g. 512 and 384: a quarter overlap).
    preprocess: Applied to each window's pixels (of ``image``'s structure),
      returning ``float32 [h, w, C]`` or a mapping of them (e.g. a
      :class:`fcn_jax.data.preprocessing.Preprocessing`); ``None``: cast to
      float32.
    batch_size: Windows per call of ``logits_fn`` (the last batch is filled
      with zero windows).
    pad_to_window: Pad an image smaller than the window up to it (see the
      module docstring); ``False`` runs it at its own size.
    return_logits: Return the averaged logits ``float32 [H, W, K]`` instead
      of the labels ``int32 [H, W]`` (their argmax); the logits take
      ``H x W x K`` floats, the labels only the band.

  Returns:
    ``int32 [H, W]`` labels, or ``float32 [H, W, K]`` logits; a dict of them
    by head when ``logits_fn`` returns a mapping.
  """
  shapes = {key: a.shape for key, a in _as_dict(image).items()}
  first = next(iter(shapes.values()))
  if len(first) != 3 and not isinstance(image, Mapping):
    raise errors.UserError(f"expected one image [H, W, C], got shape {first}")
  if len({s[:2] for s in shapes.values()}) > 1:
    raise errors.UserError(f"the images of one example differ in size: "
                           f"{shapes}")
  if batch_size < 1:
    raise errors.UserError(f"batch_size must be >= 1, got {batch_size}")
  height, width = first[:2]
  tiling = Tiling.create(height, width, window, stride, pad_to_window)
  win_h, win_w = tiling.window
  preprocess = preprocess or (lambda x: np.asarray(x, np.float32))
  # Windows covering each pixel: separable, one count per row and column.
  row_counts = coverage(height, win_h, tiling.rows).astype(np.float32)
  col_counts = coverage(width, win_w, tiling.cols).astype(np.float32)

  # Per head, the band holds output rows [band_top, band_top + win_h) as a
  # ring: row y is band row y % win_h, so moving down needs no copy.
  band_top = 0
  bands: dict[Any, np.ndarray] = {}
  outputs: dict[Any, np.ndarray] = {}
  batch_input: dict[Any, np.ndarray] = {}
  logits_tree = None

  def ring(start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """``(output_row, band_row, count)`` runs covering rows [start, stop)."""
    while start < stop:
      band_row = start % win_h
      count = min(stop - start, win_h - band_row)
      yield start, band_row, count
      start += count

  def emit(stop: int) -> None:
    """Rows [band_top, stop) are final: write them out, clear them."""
    nonlocal band_top
    for row, band_row, count in ring(band_top, min(stop, height)):
      for head, band in bands.items():
        done = band[band_row:band_row + count, :width]
        if return_logits:
          outputs[head][row:row + count] = (
              done / row_counts[row:row + count, None, None]
              / col_counts[None, :, None])
        else:  # Dividing by a positive count does not change the argmax.
          outputs[head][row:row + count] = np.argmax(done, axis=-1)
        band[band_row:band_row + count] = 0
    band_top = max(band_top, min(stop, height))

  for batch in _batches(tiling, batch_size):
    for index, (top, left) in enumerate(batch):
      crop = _like(image, {key: a[top:top + win_h, left:left + win_w]
                           for key, a in _as_dict(image).items()})
      prepared = preprocess(crop)
      for key, pixels in _as_dict(prepared).items():
        if key not in batch_input:
          batch_input[key] = np.zeros(
              (batch_size, win_h, win_w, pixels.shape[-1]), np.float32)
        batch_input[key][index] = 0
        batch_input[key][index, :pixels.shape[0], :pixels.shape[1]] = pixels
    for array in batch_input.values():
      array[len(batch):] = 0
    logits_tree = logits_fn(_like(prepared, batch_input))
    logits = {head: np.asarray(y) for head, y in _as_dict(logits_tree).items()}
    for head, y in logits.items():
      if y.shape[:3] != (batch_size, win_h, win_w):
        raise ValueError(
            f"logits_fn returned shape {y.shape} for windows "
            f"{(batch_size, win_h, win_w)}; expected [{batch_size}, {win_h}, "
            f"{win_w}, classes]")
      if head not in bands:
        bands[head] = np.zeros((win_h, max(width, win_w), y.shape[-1]),
                               np.float32)
        outputs[head] = (
            np.zeros((height, width, y.shape[-1]), np.float32)
            if return_logits else np.zeros((height, width), np.int32))
    for index, (top, left) in enumerate(batch):
      if top > band_top:  # Rows above this window's top are final.
        emit(top)
      for head, y in logits.items():
        offset = 0
        for _, band_row, count in ring(top, top + win_h):
          bands[head][band_row:band_row + count, left:left + win_w] += (
              y[index, offset:offset + count])
          offset += count
  emit(height)
  return _like(logits_tree, outputs)


def peak_memory_bytes(height: int, width: int, window: int,
                      batch_size: int, num_classes: int,
                      return_logits: bool = False) -> int:
  """The working memory :func:`sliding_window_inference` adds to the input
  image (an estimate, float32): the band, one batch of windows and their
  logits, and the output."""
  band = window * max(width, window) * num_classes * 4
  batch = batch_size * window * window * (3 + num_classes) * 4
  output = height * width * (num_classes * 4 if return_logits else 4)
  return band + batch + output
