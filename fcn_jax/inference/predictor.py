"""Inference on images of any size: shape buckets, sliding windows,
test-time augmentation and shift-and-stitch.

Three inference modes (:class:`Predictor`):

* ``fast``: every image is preprocessed, zero-padded at the bottom/right to a
  *bucket* shape (its size rounded up to a multiple of ``buckets``, or the
  smallest of a given list of sizes that fits), run in batches of images of the
  same bucket, and the logits are cropped back. Compiles happen once per bucket.
  Zeros are added *after* preprocessing, i.e. mean-colour pixels, like the
  network's own 100-pixel pad. FCN's receptive field (404 px) sees the padding,
  so logits near the bottom/right edges differ slightly from native size.
* ``exact``: the logits of the reference deploy net at each image's native
  size. Images run at the same buckets, batched, as in ``fast``, and the net
  is given each image's true size and masks every layer to it
  (``model.apply(..., sizes=...)``, :mod:`fcn_jax.data.buckets`), which makes
  the logits inside the image equal to the native-size ones; compiles happen
  once per bucket. With test-time augmentation or shift-and-stitch (which
  move or resample the padded margin) or a model without ``sizes``, exact
  mode runs each image at its native size instead (a compile per distinct
  size; batches of images of identical size).
* ``slide``: for images larger than memory allows. Each image is tiled by
  ``window x window`` windows ``stride`` apart (:mod:`fcn_jax.inference.sliding_window`),
  the windows run in batches of ``batch_size`` at one compiled shape, and the
  logits of overlapping windows are averaged (per head for a multi-head net).
  Memory is bounded by the window, the batch and the image width, not the
  image. Away from window borders the labels are those of whole-image
  inference; near them the network sees less context (and a window's own
  100-pixel pad), so some pixels differ (docs/inference.md).

Test-time augmentation (both modes): ``flip`` adds the horizontally flipped
image; ``scales`` runs resized copies and resizes their logits back; the
logits of all variants are averaged. It is :mod:`fcn_jax.inference.tta`, the same
implementation evaluation uses, run inside the compiled forward pass on each
run shape (in fast mode on the padded bucket, in slide mode on each window,
before the windows are averaged).

Shift-and-stitch (CVPR §3.2) is :mod:`fcn_jax.inference.shift_stitch`
(``Predictor(shift_stitch=f)`` for the FCN nets, where it replaces the final
upsampler).
"""

from __future__ import annotations

import collections
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors
from fcn_jax import models
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.inference import shift_stitch as shift_stitch_lib
from fcn_jax.inference import sliding_window
from fcn_jax.inference import tta as tta_lib
from fcn_jax.data.preprocessing import Preprocessing

MODES = ("fast", "exact", "slide")
# Slide mode: the default window, and the stride as a fraction of the window
# when none is given (512 and 384: a quarter overlap).
DEFAULT_WINDOW = 512
DEFAULT_STRIDE_FRACTION = 0.75
Buckets = int | Sequence[tuple[int, int]]
AUTO = buckets_lib.AUTO
# Bucket sizes rounded up to this multiple when no size in a bucket list fits.
FALLBACK_MULTIPLE = 32
# The process's peak memory over a forward pass on XLA:CPU, measured, as a
# multiple of the buffers XLA reports for it (temp + arguments + outputs):
# 2.95-3.4 for tiny FCN-8s at 500x375 .. 2000x1500 (jax 0.10), the rest being
# the convolutions' own scratch and the host copies of inputs and logits.
CPU_MEMORY_FACTOR = 3.5


# Programs loaded from JAX's persistent compilation cache in this process
# (JAX records an event for each; a load is not a compile).
_CACHE_HITS = [0]


def _count_cache_hit(event: str, **kwargs: Any) -> None:
  del kwargs
  if event == "/jax/compilation_cache/cache_hits":
    _CACHE_HITS[0] += 1


jax.monitoring.register_event_listener(_count_cache_hit)


def available_memory(device: jax.Device | None = None) -> int | None:
  """Bytes a forward pass may use on ``device`` (default: the first one): an
  accelerator's memory limit, or on CPU the memory the system has available
  now (Linux ``MemAvailable``); None when unknown."""
  device = device or jax.local_devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError):
    return None


def bucket_shape(height: int, width: int, buckets: Buckets) -> tuple[int, int]:
  """The padded shape an image of ``height x width`` runs at in fast mode.

  Args:
    height: Image height.
    width: Image width.
    buckets: A multiple to round both sides up to, or a list of ``(H, W)``
      sizes; the smallest (by area, then by height) that fits is chosen. If none
      fits, the sides are rounded up to a multiple of 32.

  Returns:
    ``(bucket_height, bucket_width)``.
  """
  if isinstance(buckets, int):
    if buckets < 1:
      raise errors.UserError(f"the bucket multiple must be >= 1, got "
                             f"{buckets}")
    return (-(-height // buckets) * buckets, -(-width // buckets) * buckets)
  fitting = buckets_lib.smallest_fitting(height, width, buckets)
  if fitting is not None:
    return fitting
  return bucket_shape(height, width, FALLBACK_MULTIPLE)


def parse_buckets(text: str, what: str = "--buckets") -> Buckets | str:
  """Parses ``"auto"``, ``"32"`` (a multiple) or ``"384x512,512x384"`` (H x W
  sizes, :func:`fcn_jax.data.buckets.parse_sizes`).

  Raises:
    errors.UserError: Anything else (a multiple below 1, a size that is not
      two positive whole numbers), naming ``what`` and the accepted forms.
  """
  text = str(text).strip().lower()
  if text == buckets_lib.AUTO:
    return buckets_lib.AUTO
  if "x" not in text:
    if text.isdigit() and int(text) >= 1:
      return int(text)
    raise errors.UserError(
        f"{what}: {text!r} is neither 'auto', a multiple such as 32, nor "
        "sizes such as 384x512,512x384")
  return list(buckets_lib.parse_sizes(text, what))


# --------------------------------------------------------------------------
# The predictor.
# --------------------------------------------------------------------------


class Predictor:
  """Runs an FCN on uint8 RGB images of any size.

  Attributes:
    num_compiles: How many executables XLA compiled (one per distinct
      ``(batch, height, width)`` run shape, less those loaded from JAX's
      persistent compilation cache).
    num_cache_loads: How many were loaded from that cache instead.
  """

  def __init__(self, model: Any, variables: Any, preprocessing: Preprocessing,
               mode: str = "fast", buckets: Buckets | str = AUTO,
               batch_size: int = 1, flip: bool = False,
               scales: Sequence[float] = (1.0,), shift_stitch: int = 1,
               window: int = DEFAULT_WINDOW, stride: int | None = None,
               max_buckets: int = buckets_lib.DEFAULT_MAX_BUCKETS):
    """Sets up a predictor.

    Args:
      model: A Flax module called as ``model.apply(variables, x, train=False)``
        returning logits of the input's size.
      variables: The model's variables.
      preprocessing: How uint8 RGB becomes network input.
      mode: ``fast`` (padded buckets, batched), ``exact`` (native-size
        logits: masked buckets, batched) or ``slide`` (overlapping windows,
        averaged).
      buckets: Fast and exact mode: a multiple to round sizes up to,
        ``(H, W)`` sizes, or ``"auto"`` (the default): exact mode picks at
        most ``max_buckets`` buckets from the sizes of the images
        (:meth:`plan`, else those of each call), as training does
        (:func:`fcn_jax.data.buckets.choose_buckets`); fast mode rounds
        each side up to a multiple of :data:`FALLBACK_MULTIPLE`, so that
        an image's fast-mode result (which the padding changes near its
        bottom/right edges) does not depend on the other images.
      batch_size: Images per forward pass. Fast and exact mode batch images
        of one bucket (exact mode at native sizes: of identical size). A
        short batch is filled with blank images so each shape compiles once.
        Slide mode: windows per forward pass (images run one at a time).
      flip: Also predict the horizontally flipped image and average.
      scales: Also predict resized copies and average (1.0 is the image).
      shift_stitch: ``f > 1`` replaces the final upsampler by shift-and-stitch
        with ``f x f`` passes
        (:func:`fcn_jax.inference.shift_stitch.stitched_scores`; FCN models
        only).
      window: Slide mode: the side of the square windows. An image smaller
        than the window (either way) is padded to it, after preprocessing,
        with zeros (the mean colour), so every window runs at one shape.
      stride: Slide mode: the distance between windows, in ``[1, window]``;
        default :data:`DEFAULT_STRIDE_FRACTION` of the window.
      max_buckets: With ``buckets="auto"`` in exact mode: at most this many.
    """
    if mode not in MODES:
      raise errors.UserError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
      raise errors.UserError(f"batch_size must be >= 1, got {batch_size}")
    if shift_stitch < 1:
      raise errors.UserError(f"shift_stitch must be >= 1, got {shift_stitch}")
    if shift_stitch > 1:
      stride = (shift_stitch_lib.coarse_head(model).stride
                if hasattr(model, "net") else None)
      if stride is None or stride % shift_stitch:
        raise errors.UserError(
            f"shift_stitch={shift_stitch} needs an FCN model whose output "
            f"stride it divides (got stride {stride})")
    if isinstance(buckets, str):
      buckets = parse_buckets(buckets, "buckets")
    if isinstance(buckets, int):
      bucket_shape(1, 1, buckets)  # Validates.
    if max_buckets < 1:
      raise errors.UserError(f"max_buckets must be >= 1, got {max_buckets}")
    self.window, self.stride = slide_settings(window, stride)
    self.model = model
    net = getattr(model, "net", None)
    inputs = net.inputs if net is not None else (models.nets.Input(),)
    self.input_sources = {i.name: i.sources for i in inputs}
    self.input_channels = {i.name: i.channels for i in inputs}
    self.multi_input = len(inputs) > 1
    self.variables = jax.device_put(variables)
    self.preprocessing = preprocessing
    self.mode = mode
    self.buckets = buckets
    self.max_buckets = max_buckets
    self._planned: tuple[tuple[int, int], ...] | None = None
    self.batch_size = batch_size
    self.tta = tta_lib.TestTimeAugmentation(flip, tuple(scales))
    self.shift_stitch = shift_stitch
    # Exact mode at masked buckets (else at native sizes, see the module
    # docstring).
    self.masked = (mode == "exact" and net is not None
                   and self.tta.is_identity and shift_stitch == 1)
    self._compiled: dict[tuple[int, int, int], Any] = {}
    self.num_cache_loads = 0
    self._outputs: dict[tuple[int, int, int], Any] = {}
    if shift_stitch > 1:
      network = lambda v, x, s: shift_stitch_lib.stitched_scores(
          model, v, x, shift_stitch)
    elif self.masked:
      network = lambda v, x, s: model.apply(v, x, train=False, sizes=s)
    else:
      network = lambda v, x, s: model.apply(v, x, train=False)
    # (variables, inputs, sizes int32 [N, 2]) -> logits.
    self._forward = jax.jit(
        lambda v, x, s: self.tta(lambda images: network(v, images, s), x))

  @property
  def num_compiles(self) -> int:
    return len(self._compiled) - self.num_cache_loads

  def plan(self, sizes: Sequence[tuple[int, int]]
           ) -> tuple[tuple[int, int], ...] | None:
    """Fixes the buckets for images of these ``(height, width)`` sizes:
    with ``buckets="auto"`` in (masked) exact mode, at most
    :attr:`max_buckets` chosen to minimise the padded pixels
    (:func:`fcn_jax.data.buckets.choose_buckets`), so that a run over many
    images compiles at most that many times instead of once per size.

    Returns:
      The buckets chosen, or None where nothing is chosen (given buckets, a
      multiple, fast/slide mode, or exact mode at native size).
    """
    self._planned = None
    if self.buckets == AUTO and self.masked and len(sizes):
      self._planned = buckets_lib.choose_buckets(np.asarray(sizes),
                                                 self.max_buckets)
    return self._planned

  def _buckets(self, sizes: Sequence[tuple[int, int]] = ()) -> Buckets:
    """The buckets in force: given ones, the planned ones, or for
    ``"auto"`` those chosen for ``sizes`` (exact mode) or rounding up to a
    multiple of :data:`FALLBACK_MULTIPLE` (fast mode)."""
    if self.buckets != AUTO:
      return self.buckets
    if self.masked and self._planned is not None:
      return self._planned
    if self.masked and len(sizes):
      return buckets_lib.choose_buckets(np.asarray(sizes), self.max_buckets)
    return FALLBACK_MULTIPLE

  @property
  def images_per_call(self) -> int:
    """How many images :meth:`predict` should be given at a time to fill
    its batches (slide mode batches the windows of one image)."""
    return 1 if self.mode == "slide" else self.batch_size

  def run_shape(self, height: int, width: int,
                buckets: Buckets | None = None) -> tuple[int, int]:
    """The shape an image of this size runs at (its bucket, itself, or in
    slide mode the window); ``buckets``: those in force, else
    :meth:`_buckets`."""
    if self.mode == "exact" and not self.masked:
      return height, width
    if self.mode == "slide":
      return self.window, self.window
    return bucket_shape(height, width, buckets or self._buckets(
        [(height, width)]))

  def memory_bytes(self, height: int, width: int) -> int:
    """Memory one forward pass of a batch of images of this size needs, from
    the compiled program's buffer sizes (compiling its run shape, which
    running it would do anyway; nothing is allocated). On CPU, times
    :data:`CPU_MEMORY_FACTOR` for what XLA does not report. Slide mode: one
    batch of windows, plus the band of averaged window rows and the labels
    (:func:`fcn_jax.inference.sliding_window.peak_memory_bytes`)."""
    shape = (self.batch_size,) + self.run_shape(height, width)
    executable = self._executable(shape)
    stats = executable.memory_analysis()
    total = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
             + stats.output_size_in_bytes)
    if jax.local_devices()[0].platform == "cpu":
      total = int(total * CPU_MEMORY_FACTOR)
    if self.mode == "slide":
      classes = sum(leaf.shape[-1]
                    for leaf in jax.tree.leaves(self._outputs[shape]))
      total += sliding_window.peak_memory_bytes(
          height, width, self.window, self.batch_size, classes)
    return int(total)

  def _model_input(self, arrays: dict[str, np.ndarray]) -> Any:
    return arrays if self.multi_input else next(iter(arrays.values()))

  def _executable(self, shape: tuple[int, int, int]) -> Any:
    if shape not in self._compiled:
      spec = self._model_input({
          name: jax.ShapeDtypeStruct(shape + (c,), jnp.float32)
          for name, c in self.input_channels.items()})
      lowered = self._forward.lower(
          self.variables, spec,
          jax.ShapeDtypeStruct((shape[0], 2), jnp.int32))
      self._outputs[shape] = lowered.out_info
      hits = _CACHE_HITS[0]
      self._compiled[shape] = lowered.compile()
      self.num_cache_loads += _CACHE_HITS[0] > hits
    return self._compiled[shape]

  def _run(self, examples: Sequence[dict[str, np.ndarray]]) -> list[Any]:
    """Logits of each example at its own size: bucketed, batched, cropped."""
    sizes = [next(iter(example.values())).shape[:2] for example in examples]
    buckets = self._buckets(sizes)
    groups = collections.defaultdict(list)
    for index, size in enumerate(sizes):
      groups[self.run_shape(*size, buckets)].append(index)
    results: list[Any] = [None] * len(examples)
    for (height, width), indices in groups.items():
      for start in range(0, len(indices), self.batch_size):
        chunk = indices[start:start + self.batch_size]
        batch = {name: np.zeros((self.batch_size, height, width, c),
                                np.float32)
                 for name, c in self.input_channels.items()}
        sizes = []
        # Blank slots: the whole bucket (their logits are dropped).
        true_sizes = np.tile(np.asarray((height, width), np.int32),
                             (self.batch_size, 1))
        for slot, index in enumerate(chunk):
          inputs = preprocessing_lib.prepare_inputs(
              examples[index], self.input_sources, self.preprocessing)
          h, w = next(iter(inputs.values())).shape[:2]
          sizes.append((h, w))
          true_sizes[slot] = (h, w)
          for name, x in inputs.items():
            batch[name][slot, :h, :w] = x
        logits = jax.tree.map(np.asarray, self._executable(
            (self.batch_size, height, width))(
                self.variables, self._model_input(batch), true_sizes))
        for slot, (index, (h, w)) in enumerate(zip(chunk, sizes)):
          results[index] = jax.tree.map(lambda y: y[slot, :h, :w], logits)
    return results

  def _slide(self, example: dict[str, np.ndarray],
             return_logits: bool) -> Any:
    """One example by sliding windows: logits, or labels (int32)."""
    executable = self._executable((self.batch_size, self.window,
                                   self.window))

    whole = np.tile(np.asarray((self.window, self.window), np.int32),
                    (self.batch_size, 1))

    def logits_fn(windows: dict[str, np.ndarray]) -> Any:
      return jax.tree.map(np.asarray, executable(
          self.variables, self._model_input(windows), whole))

    return sliding_window.sliding_window_inference(
        example, logits_fn, self.window, self.stride,
        preprocess=lambda pixels: preprocessing_lib.prepare_inputs(
            pixels, self.input_sources, self.preprocessing),
        batch_size=self.batch_size, return_logits=return_logits)

  def predict_logits(self, images: Sequence[Any]) -> list[Any]:
    """Float32 logits ``[H, W, C]`` per example, averaged over the test-time
    augmentations; a dict of them keyed by head for a multi-head net.

    Args:
      images: uint8 RGB images ``[H, W, 3]``, or for nets that read more than
        the colour image (NYUD color-D, color-HHA, HHA) dicts of an example's
        arrays keyed by feature: ``image`` (uint8 RGB), ``hha`` (uint8
        ``[H, W, 3]``), ``depth`` (raw ``[H, W]`` values), as
        :attr:`input_sources` lists them.
    """
    examples = [self._check_example(image) for image in images]
    if self.mode == "slide":
      return [self._slide(example, return_logits=True)
              for example in examples]
    return self._run(examples)

  def predict(self, images: Sequence[Any]) -> list[Any]:
    """``uint8 [H, W]`` class maps (argmax of :meth:`predict_logits`; in
    slide mode without ever holding an image's logits)."""
    if self.mode == "slide":
      return [jax.tree.map(lambda y: y.astype(np.uint8),
                           self._slide(self._check_example(image),
                                       return_logits=False))
              for image in images]
    return [jax.tree.map(lambda y: y.argmax(-1).astype(np.uint8), logits)
            for logits in self.predict_logits(images)]

  def _check_example(self, example: Any) -> dict[str, np.ndarray]:
    needed = sorted({f for fs in self.input_sources.values() for f in fs})
    if not isinstance(example, Mapping):
      if needed != ["image"]:
        raise errors.UserError(f"this net reads {needed}: pass a dict of "
                               "them per example")
      example = {"image": example}
    missing = sorted(set(needed) - set(example))
    if missing:
      raise errors.UserError(f"this net reads {needed}; missing {missing}")
    checked = {}
    for name in needed:
      array = np.asarray(example[name])
      if name == "depth":
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
          raise errors.UserError(f"expected a depth map [H, W], got "
                                 f"{array.dtype} {array.shape}")
      else:
        _check_image(array, name)
      if min(array.shape[:2]) < 1:
        raise errors.UserError(f"empty {name} of shape {array.shape}")
      checked[name] = array
    sizes = {k: a.shape[:2] for k, a in checked.items()}
    if len(set(sizes.values())) > 1:
      raise errors.UserError(f"the images of one example differ in size: "
                             f"{sizes}")
    return checked


def slide_settings(window: int, stride: int | None) -> tuple[int, int]:
  """Slide mode's ``(window, stride)``, the stride defaulting to
  :data:`DEFAULT_STRIDE_FRACTION` of the window.

  Raises:
    ValueError: A window below 1, or a stride outside ``[1, window]``.
  """
  if window < 1:
    raise errors.UserError(f"the window must be >= 1 pixel, got {window}")
  if stride is None:
    stride = max(1, int(window * DEFAULT_STRIDE_FRACTION))
  if stride < 1:
    raise errors.UserError(f"the stride must be >= 1 pixel, got {stride}")
  if stride > window:
    raise errors.UserError(
        f"the stride {stride} is larger than the window {window}: the windows "
        f"would leave gaps; give a stride <= the window (e.g. "
        f"{max(1, int(window * DEFAULT_STRIDE_FRACTION))})")
  return window, stride


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    what = "RGB image" if name == "image" else f"{name} image"
    raise errors.UserError(f"expected a uint8 {what} [H, W, 3], got "
                           f"{image.dtype} {image.shape}")
  if min(image.shape[:2]) < 1:
    raise errors.UserError(f"empty image of shape {image.shape}")
  return image
