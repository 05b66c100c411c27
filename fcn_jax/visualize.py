"""Label maps as pictures: palette PNGs, colour masks, overlays, confusion.

* Label maps are written as palette ("P" mode) PNGs with the VOC devkit colour
  map (:func:`fcn_jax.voc.voc_colormap`), the format of VOC's
  ``SegmentationClass`` files: image viewers show colours, while
  ``np.asarray(PIL.Image.open(path))`` (and the devkit) read class indices.
* RGB colour masks (such as the reference ``demo/output.png``) are decoded back
  to indices by exact colour lookup; a colour outside the palette is an error.
* Overlays blend an image with its colour mask and add a legend of the classes
  present, drawn with PIL and Pillow's built-in font.
* Confusion matrices are charts (axes, class names, colour bar, title) drawn
  with matplotlib on an explicit Agg canvas: no pyplot, no global backend
  change, nothing downloaded (matplotlib ships its fonts).
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_jax import errors
from fcn_jax import voc

PathLike = str | os.PathLike


def _palette(colormap: np.ndarray | None) -> np.ndarray:
  """A ``uint8 [256, 3]`` palette, defaulting to the VOC colour map."""
  colormap = voc.voc_colormap() if colormap is None else np.asarray(colormap)
  if colormap.ndim != 2 or colormap.shape[1] != 3 or len(colormap) > 256:
    raise ValueError(f"a colour map must be [<=256, 3], got {colormap.shape}")
  palette = np.zeros((256, 3), np.uint8)
  palette[:len(colormap)] = colormap
  return palette


def _check_labels(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"expected a [H, W] label map, got shape {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() > 255):
    raise errors.UserError(
        f"label values must be in [0, 255] for a palette PNG, got "
        f"[{labels.min()}, {labels.max()}]")
  return labels.astype(np.uint8)


def label_image(labels: np.ndarray,
                colormap: np.ndarray | None = None) -> Image.Image:
  """A palette ("P" mode) PIL image of a ``[H, W]`` label map (values 0-255)."""
  image = Image.fromarray(_check_labels(labels), mode="P")
  image.putpalette(_palette(colormap).reshape(-1).tolist())
  return image


def write_label_png(path: PathLike, labels: np.ndarray,
                    colormap: np.ndarray | None = None) -> None:
  """Writes a label map as a VOC-style palette PNG (indices + colour table)."""
  label_image(labels, colormap).save(path, format="PNG")


def colorize(labels: np.ndarray,
             colormap: np.ndarray | None = None) -> np.ndarray:
  """Maps a ``[H, W]`` label map to ``uint8 [H, W, 3]`` RGB colours."""
  return _palette(colormap)[_check_labels(labels)]


def make_tile(image: np.ndarray, label: np.ndarray, prediction: np.ndarray,
              gap: int = 4) -> np.ndarray:
  """Side by side: image | label | prediction, separated by white gaps.

  Args:
    image: uint8 RGB ``[H, W, 3]``.
    label: Ground truth ``[H, W]`` (255 = void, drawn in its palette colour).
    prediction: Predicted classes ``[H, W]``.
    gap: Pixels between panels.

  Returns:
    uint8 ``[H, 3W + 2*gap, 3]``.
  """
  height = image.shape[0]
  spacer = np.full((height, gap, 3), 255, np.uint8)
  return np.concatenate([np.asarray(image, np.uint8), spacer,
                         colorize(label), spacer, colorize(prediction)],
                        axis=1)


def colors_to_labels(rgb: np.ndarray,
                     colormap: np.ndarray | None = None) -> np.ndarray:
  """Decodes an RGB colour mask back to class indices by exact colour lookup.

  Args:
    rgb: ``uint8 [H, W, 3]`` colours.
    colormap: ``[K, 3]`` colours of indices ``0..K-1`` (VOC's 256 by default).
      If a colour appears more than once, its first index is used.

  Returns:
    ``uint8 [H, W]`` indices.

  Raises:
    errors.UserError: If a pixel's colour is not in the colour map (names the
      colours and their pixel counts).
  """
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"expected an RGB mask [H, W, 3], got shape {rgb.shape}")
  colormap = voc.voc_colormap() if colormap is None else np.asarray(colormap)
  codes = lambda c: ((c[..., 0].astype(np.int64) << 16)
                     | (c[..., 1].astype(np.int64) << 8) | c[..., 2])
  lookup = np.full(1 << 24, -1, np.int32)
  map_codes = codes(colormap.astype(np.uint8))
  # Assign in reverse so that the first index of a repeated colour wins.
  lookup[map_codes[::-1]] = np.arange(len(colormap))[::-1]
  labels = lookup[codes(rgb)]
  unknown = labels < 0
  if unknown.any():
    colors, counts = np.unique(rgb[unknown], axis=0, return_counts=True)
    listed = ", ".join(f"{tuple(int(v) for v in c)}: {n} px"
                       for c, n in list(zip(colors, counts))[:8])
    raise errors.UserError(
        f"{int(unknown.sum())} pixels have colours outside the colour map "
        f"({listed}{', ...' if len(colors) > 8 else ''}); is this a lossy "
        "(JPEG) or resized mask, or one drawn with another palette?")
  return labels.astype(np.uint8)


def read_label_png(path: PathLike,
                   colormap: np.ndarray | None = None) -> np.ndarray:
  """Reads a label map: palette/greyscale PNG indices, or decoded RGB colours.

  Palette ("P") and greyscale ("L") images are read as their stored values, as
  the VOC devkit does. RGB images are decoded with :func:`colors_to_labels`.

  Returns:
    ``uint8 [H, W]`` indices.
  """
  try:
    with Image.open(path) as image:
      image.load()
      mode = image.mode
      if mode in ("P", "L"):
        return np.asarray(image, np.uint8)
      if mode in ("RGB", "RGBA"):
        return colors_to_labels(np.asarray(image.convert("RGB")), colormap)
  except (OSError, SyntaxError) as e:
    raise errors.UserError(f"cannot read label image {path}: {e}") from e
  raise errors.UserError(
      f"{path}: label images must be palette, greyscale or RGB, got mode "
      f"{mode!r}.")


# --------------------------------------------------------------------------
# Drawing.
# --------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont:
  """Pillow's built-in font (a scalable one on Pillow >= 10.1)."""
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: fixed-size bitmap font.
    return ImageFont.load_default()


def _text_size(text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
  """Width and height of the ink of ``text``."""
  left, top, right, bottom = font.getbbox(text)
  return right - left, bottom - top


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str,
               font: ImageFont.ImageFont,
               fill: tuple[int, int, int] = (0, 0, 0)) -> None:
  """Draws ``text`` with the top-left corner of its ink at ``xy``."""
  left, top, _, _ = font.getbbox(text)
  draw.text((xy[0] - left, xy[1] - top), text, fill=fill, font=font)


def class_name(index: int, class_names: Sequence[str],
               ignore_label: int | None = voc.IGNORE_LABEL) -> str:
  """A printable name for class ``index`` (``void`` for the ignore label)."""
  if ignore_label is not None and index == ignore_label:
    return "void"
  return class_names[index] if index < len(class_names) else f"class {index}"


_OVERLAY_BAND_ROWS = 512


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
            class_names: Sequence[str] = voc.VOC_CLASSES,
            colormap: np.ndarray | None = None, legend: bool = True,
            ignore_label: int | None = voc.IGNORE_LABEL,
            outline: bool = True) -> Image.Image:
  """Blends an image with its colour mask and adds a legend of present classes.

  Each pixel becomes ``(1 - alpha) * image + alpha * colour``, except that
  background (index 0) and ignored pixels keep more of the image
  (``alpha / 2``) so the scene stays readable, and (with ``outline``) pixels
  on a boundary between classes take their class colour in full. The legend
  is a panel to the right of the image listing every class present, with its
  colour and its share of the pixels.

  Args:
    image: ``uint8 [H, W, 3]`` RGB image.
    labels: ``[H, W]`` class indices (0-255).
    alpha: Opacity of the colour mask, in ``[0, 1]``.
    class_names: Names for the legend (VOC's 21 by default).
    colormap: Colours (VOC's by default).
    legend: Whether to add the legend panel.
    ignore_label: Index shown as ``void`` (None: no such index).
    outline: Draw class boundaries (pixels with a differently labelled
      4-neighbour) in the full class colour.

  Returns:
    An RGB PIL image, ``W`` (plus the legend width) by ``H``.
  """
  image = np.asarray(image)
  labels = _check_labels(labels)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 RGB image [H, W, 3], got "
                     f"{image.dtype} {image.shape}")
  if image.shape[:2] != labels.shape:
    raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} "
                     "differ in size")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  edges = _boundaries(labels) if outline else None
  blended = np.empty(image.shape, np.uint8)
  # In bands of rows, so that a huge image (slide-mode prediction) needs
  # float32 copies of a band only.
  for top in range(0, labels.shape[0], _OVERLAY_BAND_ROWS):
    rows = slice(top, top + _OVERLAY_BAND_ROWS)
    band = labels[rows]
    colors = colorize(band, colormap).astype(np.float32)
    weight = np.full(band.shape, alpha, np.float32)
    faint = band == 0
    if ignore_label is not None:
      faint |= band == ignore_label
    weight[faint] = alpha / 2
    if outline:
      weight[edges[rows]] = 1.0
    weight = weight[..., None]
    mixed = (1.0 - weight) * image[rows].astype(np.float32) + weight * colors
    blended[rows] = np.clip(np.rint(mixed), 0, 255)
  picture = Image.fromarray(blended)
  if not legend:
    return picture
  return _add_legend(picture, labels, class_names, _palette(colormap),
                     ignore_label)


def _boundaries(labels: np.ndarray) -> np.ndarray:
  """Pixels with a 4-neighbour of another label."""
  edge = np.zeros(labels.shape, bool)
  vertical = labels[1:] != labels[:-1]
  horizontal = labels[:, 1:] != labels[:, :-1]
  edge[1:] |= vertical
  edge[:-1] |= vertical
  edge[:, 1:] |= horizontal
  edge[:, :-1] |= horizontal
  return edge


def _add_legend(picture: Image.Image, labels: np.ndarray,
                class_names: Sequence[str], palette: np.ndarray,
                ignore_label: int | None) -> Image.Image:
  """Appends a panel listing the classes present, with colour swatches."""
  present, counts = np.unique(labels, return_counts=True)
  # Scale the text with the image, within readable bounds.
  font_size = int(np.clip(picture.height / 22, 11, 18))
  font = _font(font_size)
  shares = 100.0 * counts / labels.size
  entries = [f"{class_name(int(i), class_names, ignore_label)} "
             + (f"{share:.0f}%" if share >= 0.5 else "<1%")
             for i, share in zip(present, shares)]
  text_w = max(_text_size(text, font)[0] for text in entries)
  _, text_h = _text_size("Ag%", font)
  swatch = text_h + 4
  row = swatch + font_size // 2
  margin = font_size // 2
  panel_w = margin * 3 + swatch + text_w
  panel_h = max(picture.height, margin * 2 + row * len(entries))
  canvas = Image.new("RGB", (picture.width + panel_w, panel_h),
                     (255, 255, 255))
  canvas.paste(picture, (0, 0))
  draw = ImageDraw.Draw(canvas)
  x0 = picture.width + margin
  for k, (index, text) in enumerate(zip(present, entries)):
    y = margin + k * row
    color = tuple(int(v) for v in palette[int(index)])
    draw.rectangle((x0, y, x0 + swatch, y + swatch), fill=color,
                   outline=(0, 0, 0))
    _draw_text(draw, (x0 + swatch + margin, y + (swatch - text_h) // 2), text,
               font)
  return canvas


# Confusion matrices: row fractions from white (0%) to dark blue (100%), rows
# of classes absent from the ground truth in grey.
CONFUSION_LOW = (255, 255, 255)
CONFUSION_HIGH = (8, 48, 107)
CONFUSION_ABSENT = (200, 200, 200)
_DPI = 100


def normalize_confusion(hist: np.ndarray) -> np.ndarray:
  """Divides each row (ground-truth class) by its total; empty rows are NaN."""
  hist = np.asarray(hist, np.float64)
  totals = hist.sum(axis=1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(totals > 0, hist / totals, np.nan)


def confusion_matrix_image(hist: np.ndarray,
                           class_names: Sequence[str] = voc.VOC_CLASSES,
                           cell: int = 28,
                           title: str | None = None) -> Image.Image:
  """Draws a row-normalised confusion matrix as a labelled heat map.

  Row ``i`` is ground-truth class ``i``; column ``j`` is the fraction of its
  pixels predicted as ``j`` (rows sum to 100%). Cells show the percentage when
  it rounds to at least 1, and the colour bar gives the scale (white 0% to
  dark blue 100%). Rows of classes absent from the ground truth are grey.
  Drawn with matplotlib (Agg, no pyplot), cropped to its content.

  Args:
    hist: ``[C, C]`` counts (rows = ground truth, columns = prediction).
    class_names: ``C`` names for the axes.
    cell: Side of one matrix cell in pixels.
    title: Optional title above the matrix.

  Returns:
    An RGB PIL image.

  Raises:
    ValueError: If ``hist`` is not square, the names do not match it or
      ``cell`` is below 1.
  """
  # Deferred: matplotlib costs half a second to import, and only this
  # function of the module needs it.
  # pylint: disable=g-import-not-at-top
  from matplotlib import colors as mpl_colors
  from matplotlib import figure as mpl_figure
  from matplotlib.backends import backend_agg
  # pylint: enable=g-import-not-at-top

  hist = np.asarray(hist)
  if hist.ndim != 2 or hist.shape[0] != hist.shape[1] or not hist.size:
    raise ValueError(f"expected a square confusion matrix, got {hist.shape}")
  num_classes = hist.shape[0]
  if len(class_names) != num_classes:
    raise ValueError(f"{len(class_names)} class names for {num_classes} "
                     "classes")
  if cell < 1:
    raise ValueError(f"cell must be at least 1 pixel, got {cell}")
  percent = 100.0 * normalize_confusion(hist)
  colormap = mpl_colors.LinearSegmentedColormap.from_list(
      "fcn_confusion", [np.divide(CONFUSION_LOW, 255),
                        np.divide(CONFUSION_HIGH, 255)]).with_extremes(
                            bad=np.divide(CONFUSION_ABSENT, 255))
  points = 72 / _DPI  # Font sizes are in points, the layout in pixels.
  name_size = max(10.0, 0.45 * cell) * points
  value_size = max(7.0, 0.36 * cell) * points
  # Place the matrix at whole pixels with generous margins for the names; the
  # PNG is then cropped to what was drawn, so each cell stays ``cell`` pixels.
  side = num_classes * cell
  longest = max(len(name) for name in class_names)
  margin = int(longest * 0.45 * cell + 6 * cell + 60)
  bar = max(12, cell // 2)
  width, height = margin + side + 8 * bar + 120, 2 * margin + side
  figure = mpl_figure.Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.add_axes((margin / width, margin / height, side / width,
                          side / height))
  colorbar_axes = figure.add_axes(((margin + side + bar) / width,
                                   margin / height, bar / width,
                                   side / height))
  image = axes.imshow(np.ma.masked_invalid(percent), cmap=colormap, vmin=0,
                      vmax=100, interpolation="nearest", aspect="auto")
  ticks = np.arange(num_classes)
  axes.set_xticks(ticks, list(class_names), rotation=90, fontsize=name_size)
  axes.set_yticks(ticks, list(class_names), fontsize=name_size)
  axes.set_xlabel("predicted class", fontsize=name_size * 1.1)
  axes.set_ylabel("ground-truth class", fontsize=name_size * 1.1)
  if title:
    axes.set_title(title, fontsize=name_size * 1.25, pad=cell / 2)
  for i, j in zip(*np.nonzero(np.nan_to_num(percent) >= 0.5)):
    value = percent[i, j]
    axes.text(j, i, f"{value:.0f}", ha="center", va="center",
              fontsize=value_size,
              color="white" if value > 50 else "black")
  colorbar = figure.colorbar(image, cax=colorbar_axes)
  colorbar.set_label("% of the row's pixels", fontsize=name_size)
  colorbar.ax.tick_params(labelsize=name_size)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", bbox_inches="tight",
                 pad_inches=cell / 2 / _DPI, facecolor="white")
  buffer.seek(0)
  with Image.open(buffer) as picture:
    return picture.convert("RGB")
