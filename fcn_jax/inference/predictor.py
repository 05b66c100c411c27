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

Shift-and-stitch (CVPR §3.2) is in :func:`shift_and_stitch` for any function
of images, and in :func:`stitched_scores` (``Predictor(shift_stitch=f)``) for
the FCN nets, where it replaces the final upsampler.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import models
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.inference import sliding_window
from fcn_jax.inference import tta as tta_lib
from fcn_jax.data.preprocessing import Preprocessing

MODES = ("fast", "exact", "slide")
# Slide mode: the default window, and the stride as a fraction of the window
# when none is given (512 and 384: a quarter overlap).
DEFAULT_WINDOW = 512
DEFAULT_STRIDE_FRACTION = 0.75
Buckets = int | Sequence[tuple[int, int]]
# Bucket sizes rounded up to this multiple when no size in a bucket list fits.
FALLBACK_MULTIPLE = 32
# The process's peak memory over a forward pass on XLA:CPU, measured, as a
# multiple of the buffers XLA reports for it (temp + arguments + outputs):
# 2.95-3.4 for tiny FCN-8s at 500x375 .. 2000x1500 (jax 0.10), the rest being
# the convolutions' own scratch and the host copies of inputs and logits.
CPU_MEMORY_FACTOR = 3.5


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
      raise ValueError(f"the bucket multiple must be >= 1, got {buckets}")
    return (-(-height // buckets) * buckets, -(-width // buckets) * buckets)
  fitting = buckets_lib.smallest_fitting(height, width, buckets)
  if fitting is not None:
    return fitting
  return bucket_shape(height, width, FALLBACK_MULTIPLE)


def parse_buckets(text: str) -> Buckets:
  """Parses ``"32"`` (a multiple) or ``"384x512,512x384"`` (H x W sizes)."""
  text = text.strip()
  try:
    if "x" not in text:
      return int(text)
    sizes = []
    for item in text.split(","):
      h, w = item.lower().split("x")
      sizes.append((int(h), int(w)))
    return sizes
  except ValueError:
    raise ValueError(
        f"cannot parse buckets {text!r}: give a multiple such as 32, or sizes "
        "such as 384x512,512x384") from None


# --------------------------------------------------------------------------
# Shift-and-stitch.
# --------------------------------------------------------------------------


def shift_images(images: jax.Array, dy: Any, dx: Any) -> jax.Array:
  """``out[:, i, j] = images[:, i + dy, j + dx]``, zero past the bottom/right.

  The shift may be traced (``dy``, ``dx`` scalars in ``[0, H)``, ``[0, W)``).
  """
  n, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (0, height), (0, width), (0, 0)))
  zero = jnp.zeros((), jnp.int32)
  return jax.lax.dynamic_slice(
      padded, (zero, jnp.asarray(dy, jnp.int32), jnp.asarray(dx, jnp.int32),
               zero), (n, height, width, channels))


def shift_and_stitch(apply_fn: Callable[[jax.Array], jax.Array],
                     images: jax.Array, f: int,
                     stride: int | None = None) -> jax.Array:
  """Shift-and-stitch (Long et al., CVPR 2015, §3.2): a denser output from
  ``f x f`` shifted passes of a strided network.

  ``apply_fn`` maps images ``[N, H, W, C]`` to a coarse output
  ``[N, h, w, K]`` of output stride ``stride`` (cell ``(a, b)`` looks at input
  pixel ``(stride*a, stride*b)`` plus a constant offset). Let
  ``u = stride // f`` and, for each shift ``(dy, dx)`` in
  ``{0..f-1} x {0..f-1}``, let pass ``(dy, dx)`` see the image moved up and
  left by ``(u*dy, u*dx)`` pixels: ``x'[i, j] = x[i + u*dy, j + u*dx]``,
  zero past the bottom/right edge (zero = the mean colour after
  preprocessing). Its cell ``(a, b)`` then looks at original pixel
  ``(stride*a + u*dy, stride*b + u*dx)`` (plus the offset). The passes are
  interleaved so that every output pixel comes from the pass whose shift
  aligns it::

    out[n, f*a + dy, f*b + dx] = apply_fn(x_shifted_by(u*dy, u*dx))[n, a, b]

  so ``out`` has shape ``[N, f*h, f*w, K]`` and output stride ``stride / f``
  (1 when ``f == stride``: a prediction for every pixel, the paper's setting).

  The passes run one after another (``jax.lax.map``), so memory stays that of
  one pass and the time is ``f**2`` passes.

  Args:
    apply_fn: The coarse network, a JAX-traceable function of images.
    images: Preprocessed images ``[N, H, W, C]``.
    f: Shifts per axis (``>= 1``).
    stride: Output stride of ``apply_fn``; must be a multiple of ``f``.
      Defaults to ``f``.

  Returns:
    The stitched output ``[N, f*h, f*w, K]``.
  """
  stride = f if stride is None else stride
  if f < 1 or stride % f:
    raise ValueError(
        f"shift-and-stitch needs f >= 1 dividing the output stride; got f={f}, "
        f"stride={stride}")
  step = stride // f
  shifts = np.array([(dy * step, dx * step) for dy in range(f)
                     for dx in range(f)], np.int32)
  passes = jax.lax.map(
      lambda shift: apply_fn(shift_images(images, shift[0], shift[1])),
      jnp.asarray(shifts))
  _, n, h, w, k = passes.shape
  passes = passes.reshape(f, f, n, h, w, k).transpose(2, 3, 0, 4, 1, 5)
  return passes.reshape(n, h * f, w * f, k)


@dataclasses.dataclass(frozen=True)
class CoarseHead:
  """Where an FCN's scores are before its final upsampler.

  Attributes:
    stride: Output stride of the coarse scores (32, 16 or 8).
    center: Input coordinate of coarse cell 0 (cell ``a`` is at
      ``stride * a + center``); from Caffe's coordinate maps: the final
      ``Deconvolution(k, s)`` puts cell ``a`` at upscore ``s*a + (k-1)/2`` and
      the crop subtracts its offset (docs/reference.md §3, §6.2).
  """
  stride: int
  center: float


def coarse_head(model: models.FCN) -> CoarseHead:
  """The stride and alignment of an FCN's last scores before upsampling.

  Raises:
    ValueError: A net with two heads or two streams (shift-and-stitch here
      replaces the final upsampler of one head on one trunk).
  """
  if model.multi_head or model.net.fusion is not None:
    raise ValueError(f"shift-and-stitch supports one-trunk, one-head nets; "
                     f"{model.net.name} has "
                     + ("two heads" if model.multi_head else "two streams"))
  final = model.head.final
  return CoarseHead(final.stride,
                    (final.kernel - 1) / 2 - model.head.final_offset)


def coarse_scores(model: models.FCN, variables: Any,
                  images: jax.Array) -> jax.Array:
  """The input of an FCN's final upsampler: ``score_fr`` (32s), ``fuse_pool4``
  (16s) or ``fuse_pool3`` (8s), as float32 ``[N, h, w, C]``."""
  _, state = model.apply(variables, images, train=False,
                         mutable=["intermediates"])
  blobs = state["intermediates"]["blobs"][0]
  if not model.head.skips:
    return blobs["score_fr"].astype(jnp.float32)
  last = model.head.skips[-1]
  fused = blobs[last.upsampler.name] + blobs[last.score_layer + "c"]
  return fused.astype(jnp.float32)


def stitched_scores(model: models.FCN, variables: Any, images: jax.Array,
                    f: int) -> jax.Array:
  """Dense FCN scores by shift-and-stitch instead of the final upsampler.

  The coarse scores before the final upsampler (stride ``s``: 32 for FCN-32s,
  16 for 16s, 8 for 8s) are shift-and-stitched with ``f`` (which must divide
  ``s``) into a map of stride ``s / f``; its cell ``m`` sits at input
  coordinate ``(s / f) * m + center`` (see :class:`CoarseHead`). Each output
  pixel ``i`` takes that map linearly interpolated at ``(i - center) / (s/f)``
  (edge values beyond the ends). With ``f = s`` every value is computed by the
  network and the interpolation only bridges the half-pixel ``center``; with
  ``f = 1`` this is the bilinear upsampling of the reference deconvolution,
  equal to the model's output away from the borders.

  Args:
    model: An FCN from :func:`fcn_jax.models.create_model`.
    variables: Its variables.
    images: Preprocessed ``[N, H, W, 3]``.
    f: Shifts per axis.

  Returns:
    Float32 scores ``[N, H, W, C]``.
  """
  if not hasattr(model, "net"):
    raise TypeError(
        "stitched_scores needs an fcn_jax.models.FCN; for another network use "
        "shift_and_stitch(apply_fn, images, f, stride).")
  head = coarse_head(model)
  if head.stride % f:
    raise ValueError(f"shift-and-stitch f={f} must divide the output stride "
                     f"{head.stride} of {type(model).__name__}")
  stitched = shift_and_stitch(lambda x: coarse_scores(model, variables, x),
                              images, f, head.stride)
  step = head.stride // f
  height, width = images.shape[1:3]
  rows = (np.arange(height) - head.center) / step
  cols = (np.arange(width) - head.center) / step
  return tta_lib.linear_resample(
      tta_lib.linear_resample(stitched, rows, 1), cols, 2)


# --------------------------------------------------------------------------
# The predictor.
# --------------------------------------------------------------------------


class Predictor:
  """Runs an FCN on uint8 RGB images of any size.

  Attributes:
    num_compiles: How many executables were compiled (one per distinct
      ``(batch, height, width)`` run shape).
  """

  def __init__(self, model: Any, variables: Any, preprocessing: Preprocessing,
               mode: str = "fast", buckets: Buckets = 32, batch_size: int = 1,
               flip: bool = False, scales: Sequence[float] = (1.0,),
               shift_stitch: int = 1, window: int = DEFAULT_WINDOW,
               stride: int | None = None):
    """Sets up a predictor.

    Args:
      model: A Flax module called as ``model.apply(variables, x, train=False)``
        returning logits of the input's size.
      variables: The model's variables.
      preprocessing: How uint8 RGB becomes network input.
      mode: ``fast`` (padded buckets, batched), ``exact`` (native-size
        logits: masked buckets, batched) or ``slide`` (overlapping windows,
        averaged).
      buckets: Fast and exact mode: a multiple to round sizes up to, or
        ``(H, W)`` sizes.
      batch_size: Images per forward pass. Fast and exact mode batch images
        of one bucket (exact mode at native sizes: of identical size). A
        short batch is filled with blank images so each shape compiles once.
        Slide mode: windows per forward pass (images run one at a time).
      flip: Also predict the horizontally flipped image and average.
      scales: Also predict resized copies and average (1.0 is the image).
      shift_stitch: ``f > 1`` replaces the final upsampler by shift-and-stitch
        with ``f x f`` passes (:func:`stitched_scores`; FCN models only).
      window: Slide mode: the side of the square windows. An image smaller
        than the window (either way) is padded to it, after preprocessing,
        with zeros (the mean colour), so every window runs at one shape.
      stride: Slide mode: the distance between windows, in ``[1, window]``;
        default :data:`DEFAULT_STRIDE_FRACTION` of the window.
    """
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shift_stitch < 1:
      raise ValueError(f"shift_stitch must be >= 1, got {shift_stitch}")
    if shift_stitch > 1:
      stride = coarse_head(model).stride if hasattr(model, "net") else None
      if stride is None or stride % shift_stitch:
        raise ValueError(
            f"shift_stitch={shift_stitch} needs an FCN model whose output "
            f"stride it divides (got stride {stride})")
    if isinstance(buckets, int):
      bucket_shape(1, 1, buckets)  # Validates.
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
    self.batch_size = batch_size
    self.tta = tta_lib.TestTimeAugmentation(flip, tuple(scales))
    self.shift_stitch = shift_stitch
    # Exact mode at masked buckets (else at native sizes, see the module
    # docstring).
    self.masked = (mode == "exact" and net is not None
                   and self.tta.is_identity and shift_stitch == 1)
    self._compiled: dict[tuple[int, int, int], Any] = {}
    self._outputs: dict[tuple[int, int, int], Any] = {}
    if shift_stitch > 1:
      network = lambda v, x, s: stitched_scores(model, v, x, shift_stitch)
    elif self.masked:
      network = lambda v, x, s: model.apply(v, x, train=False, sizes=s)
    else:
      network = lambda v, x, s: model.apply(v, x, train=False)
    # (variables, inputs, sizes int32 [N, 2]) -> logits.
    self._forward = jax.jit(
        lambda v, x, s: self.tta(lambda images: network(v, images, s), x))

  @property
  def num_compiles(self) -> int:
    return len(self._compiled)

  @property
  def images_per_call(self) -> int:
    """How many images :meth:`predict` should be given at a time to fill
    its batches (slide mode batches the windows of one image)."""
    return 1 if self.mode == "slide" else self.batch_size

  def run_shape(self, height: int, width: int) -> tuple[int, int]:
    """The shape an image of this size runs at (its bucket, itself, or in
    slide mode the window)."""
    if self.mode == "exact" and not self.masked:
      return height, width
    if self.mode == "slide":
      return self.window, self.window
    return bucket_shape(height, width, self.buckets)

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
      self._compiled[shape] = lowered.compile()
    return self._compiled[shape]

  def _run(self, examples: Sequence[dict[str, np.ndarray]]) -> list[Any]:
    """Logits of each example at its own size: bucketed, batched, cropped."""
    groups = collections.defaultdict(list)
    for index, example in enumerate(examples):
      groups[self.run_shape(*example["image" if "image" in example else
                                     next(iter(example))].shape[:2])
             ].append(index)
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
        raise ValueError(f"this net reads {needed}: pass a dict of them per "
                         "example")
      example = {"image": example}
    missing = sorted(set(needed) - set(example))
    if missing:
      raise ValueError(f"this net reads {needed}; missing {missing}")
    checked = {}
    for name in needed:
      array = np.asarray(example[name])
      if name == "depth":
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
          raise ValueError(f"expected a depth map [H, W], got {array.dtype} "
                           f"{array.shape}")
      else:
        _check_image(array, name)
      if min(array.shape[:2]) < 1:
        raise ValueError(f"empty {name} of shape {array.shape}")
      checked[name] = array
    sizes = {k: a.shape[:2] for k, a in checked.items()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"the images of one example differ in size: {sizes}")
    return checked


def slide_settings(window: int, stride: int | None) -> tuple[int, int]:
  """Slide mode's ``(window, stride)``, the stride defaulting to
  :data:`DEFAULT_STRIDE_FRACTION` of the window.

  Raises:
    ValueError: A window below 1, or a stride outside ``[1, window]``.
  """
  if window < 1:
    raise ValueError(f"the window must be >= 1 pixel, got {window}")
  if stride is None:
    stride = max(1, int(window * DEFAULT_STRIDE_FRACTION))
  if stride < 1:
    raise ValueError(f"the stride must be >= 1 pixel, got {stride}")
  if stride > window:
    raise ValueError(
        f"the stride {stride} is larger than the window {window}: the windows "
        f"would leave gaps; give a stride <= the window (e.g. "
        f"{max(1, int(window * DEFAULT_STRIDE_FRACTION))})")
  return window, stride


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    what = "RGB image" if name == "image" else f"{name} image"
    raise ValueError(f"expected a uint8 {what} [H, W, 3], got {image.dtype} "
                     f"{image.shape}")
  if min(image.shape[:2]) < 1:
    raise ValueError(f"empty image of shape {image.shape}")
  return image
