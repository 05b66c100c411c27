"""Pretrained weights: Caffe-layout blobs mapped onto an FCN's parameters.

The one seam is :func:`from_caffe_layers`. Every reader in
:mod:`fcn_jax.readers` turns its file into ``{caffe_layer: [blobs]}`` in Caffe
layouts, and this module maps those blobs onto a model's parameters by name:

* convolutions OIHW -> HWIO (grouped ones, CaffeNet's conv2/4/5, are
  ``(out, in/group, k, k)``, which is Flax's ``(k, k, in/group, out)``);
  InnerProduct ``(out, C*k*k)`` blobs (VGG16's and CaffeNet's fc6/fc7) are
  convolutionalised by the C-order reshape (docs/reference.md §4.5);
* a base net's first convolution fills a renamed, wider one (NYUD color-D's
  ``conv1_1_bgrd`` from ``conv1_1``: the three input channels copied, the
  fourth their mean, §8.2);
* Deconvolution ``(C_in, C_out, k, k)`` -> HWIO, spatially flipped (§4.3);
* every shape is checked, and all mismatches are reported in one error;
* layers the file lacks start as Caffe starts them
  (:meth:`fcn_jax.models.FCN.reference_init`: score layers at zero,
  upsamplers bilinear, Scale layers at their constants). Layers the file has
  but the model lacks are reported as unused (:class:`LoadReport`).

Staged training (FCN-32s -> 16s -> 8s; trained colour and HHA nets into
the streams of color-HHA) copies layers by name between parameter trees with
:func:`copy_by_name`. Where converted weights are stored,
and how, is :mod:`fcn_jax.checkpointing`'s business.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from fcn_jax import errors
from fcn_jax import models

# Layers a file may hold that no FCN has: VGG16's 1000-way ImageNet classifier.
IMAGENET_CLASSIFIER_LAYERS = ("fc8",)

Params = dict[str, dict[str, np.ndarray]]


class WeightsError(errors.UserError):
  """Weights that do not fit a model (every problem listed, with hints)."""


# --------------------------------------------------------------------------
# The load report.
# --------------------------------------------------------------------------

LOADED, MISSING, UNUSED = "loaded", "missing", "unused"


@dataclasses.dataclass(frozen=True)
class LayerRow:
  """One layer of a :class:`LoadReport`.

  Attributes:
    layer: Caffe layer name.
    status: ``loaded`` (copied from the source), ``missing`` (not in the
      source; initialised as ``note`` says) or ``unused`` (in the source, not
      in the model).
    model_shape: The model's parameter shapes (empty for unused layers).
    source_shape: The source's blob shapes (empty for missing layers).
    note: How a missing layer was initialised, or how a blob was converted.
  """
  layer: str
  status: str
  model_shape: str = ""
  source_shape: str = ""
  note: str = ""


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What a load copied, initialised and ignored, like Caffe's copy-by-name."""
  rows: tuple[LayerRow, ...]

  def _names(self, status: str) -> list[str]:
    return [r.layer for r in self.rows if r.status == status]

  @property
  def loaded(self) -> list[str]:
    return self._names(LOADED)

  @property
  def missing(self) -> dict[str, str]:
    """Missing layer -> how it was initialised."""
    return {r.layer: r.note for r in self.rows if r.status == MISSING}

  @property
  def unused(self) -> list[str]:
    return self._names(UNUSED)

  def summary(self) -> str:
    missing = ", ".join(f"{k} ({v})" for k, v in self.missing.items())
    unused = ", ".join(self.unused)
    return (f"loaded {len(self.loaded)} layers; missing {len(self.missing)}"
            f"{': ' + missing if missing else ''}; unused {len(self.unused)}"
            f"{': ' + unused if unused else ''}.")

  def table(self) -> str:
    """A fixed-width table of every layer."""
    header = ("layer", "status", "model", "source", "note")
    lines = [header] + [(r.layer, r.status, r.model_shape, r.source_shape,
                         r.note) for r in self.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "  ".join(
        cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule] + [fmt(line) for line in lines[1:]])

  def to_dict(self) -> dict[str, Any]:
    return {"loaded": self.loaded, "missing": self.missing,
            "unused": self.unused,
            "layers": [dataclasses.asdict(r) for r in self.rows]}


def _shape_text(shape: Sequence[int]) -> str:
  return "x".join(str(d) for d in shape) if len(shape) else "scalar"


_LEAF_ORDER = {"kernel": 0, "bias": 1, "scale": 2}


def _leaves_text(leaves: Mapping[str, Any]) -> str:
  names = sorted(leaves, key=lambda k: (_LEAF_ORDER.get(k, 3), k))
  return ", ".join(f"{k} {_shape_text(np.shape(leaves[k]))}" for k in names)


def _blobs_text(blobs: Sequence[np.ndarray]) -> str:
  return " ".join(str(tuple(np.shape(b))) for b in blobs)


# --------------------------------------------------------------------------
# Which network a file is.
# --------------------------------------------------------------------------


def is_head_layer(name: str) -> bool:
  """Whether a layer belongs to a head (score, upsampler, Scale)."""
  return name.startswith(("score", "upscore", "scale_"))


def guess_model(layer_names: Iterable[str]) -> str | None:
  """Which network a set of layer names is: model names (``a or b`` where
  nets share their layer names), a base net (``vgg16``, ``caffenet``) or
  None."""
  names = set(layer_names) - set(IMAGENET_CLASSIFIER_LAYERS)
  for trunk in models.TRUNKS.values():
    if names == set(trunk.layer_names):
      return trunk.name
  unscaled = {n for n in names if not n.startswith("scale_")}
  matches = [m for m in models.MODEL_NAMES
             if names == models.model_layer_names(m)
             or (unscaled == names and names == {
                 n for n in models.model_layer_names(m)
                 if not n.startswith("scale_")})]
  return " or ".join(matches) if matches else None


# --------------------------------------------------------------------------
# Blob conversion (Caffe layout -> Flax layout), with shape checks.
# --------------------------------------------------------------------------


def _strip(shape: Sequence[int]) -> tuple[int, ...]:
  """Drops leading singleton axes (Caffe's legacy 4-D blobs pad with 1s)."""
  shape = tuple(shape)
  while shape and shape[0] == 1:
    shape = shape[1:]
  return shape


class _Mismatch(Exception):
  pass


def _expect_count(blobs: Sequence[np.ndarray], count: int, what: str) -> None:
  if len(blobs) != count:
    raise _Mismatch(f"{len(blobs)} blobs {_blobs_text(blobs)}, expected "
                    f"{count} ({what})")


def _conv_leaves(blobs, kernel_shape) -> tuple[dict[str, np.ndarray], str]:
  """Convolution or InnerProduct blobs -> ``{'kernel': HWIO, 'bias'}``."""
  kh, kw, cin, cout = kernel_shape
  _expect_count(blobs, 2, "weight and bias")
  weight, bias = blobs
  conv_shape, fc_shape = (cout, cin, kh, kw), (cout, cin * kh * kw)
  problems, note = [], ""
  if _strip(weight.shape) == _strip(conv_shape):
    kernel = weight.reshape(conv_shape).transpose(2, 3, 1, 0)
  elif kh == kw and _strip(weight.shape) == _strip(fc_shape):
    kernel = models.convolutionalize(weight.reshape(fc_shape), cin, kh)
    note = f"InnerProduct {fc_shape} -> {kh}x{kw} conv"
  else:
    kernel = None
    problems.append(f"weight {tuple(weight.shape)}, expected {conv_shape}"
                    + (f" or InnerProduct {fc_shape}" if kh * kw > 1 else ""))
  if _strip(bias.shape) != _strip((cout,)):
    problems.append(f"bias {tuple(bias.shape)}, expected ({cout},)")
  if problems:
    raise _Mismatch("; ".join(problems))
  return {"kernel": kernel, "bias": bias.reshape(cout)}, note


def _deconv_leaves(blobs, kernel_shape) -> tuple[dict[str, np.ndarray], str]:
  """Deconvolution ``(C_in, C_out, k, k)`` -> flipped HWIO (docs/reference.md
  §4.3)."""
  kh, kw, cin, cout = kernel_shape
  _expect_count(blobs, 1, "a Deconvolution weight without bias")
  expected = (cin, cout, kh, kw)
  if _strip(blobs[0].shape) != _strip(expected):
    raise _Mismatch(f"weight {tuple(blobs[0].shape)}, expected {expected}")
  kernel = blobs[0].reshape(expected).transpose(2, 3, 0, 1)[::-1, ::-1]
  return {"kernel": kernel}, "deconvolution, flipped"


def _scale_leaves(blobs, scale_shape) -> tuple[dict[str, np.ndarray], str]:
  _expect_count(blobs, 1, "a Scale multiplier without bias")
  if _strip(blobs[0].shape) != _strip(scale_shape):
    raise _Mismatch(f"scale {tuple(blobs[0].shape)}, expected "
                    f"{tuple(scale_shape)}")
  return {"scale": blobs[0].reshape(scale_shape)}, ""


def _convert_layer(blobs, target: Mapping[str, Any]):
  kind = frozenset(target)
  if kind == {"kernel", "bias"}:
    return _conv_leaves(blobs, target["kernel"].shape)
  if kind == {"kernel"}:
    return _deconv_leaves(blobs, target["kernel"].shape)
  if kind == {"scale"}:
    return _scale_leaves(blobs, target["scale"].shape)
  raise ValueError(f"unexpected parameters {sorted(kind)}")


def expand_input_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
  """A first-layer HWIO kernel widened to ``channels`` inputs as NYUD
  color-D's ``solve.py`` does (docs/reference.md §8.2): the existing input
  channels copied, each new one the mean of the existing ones."""
  kernel = np.asarray(kernel)
  extra = channels - kernel.shape[2]
  if extra < 0:
    raise ValueError(f"cannot narrow a kernel of {kernel.shape[2]} input "
                     f"channels to {channels}")
  mean = kernel.mean(axis=2, keepdims=True)
  return np.concatenate([kernel] + [mean] * extra, axis=2)


def _expanded_leaves(blobs, target: Mapping[str, Any], source_name: str
                     ) -> tuple[dict[str, np.ndarray], str]:
  """A base net's first convolution (``conv1_1``) for a renamed, wider one
  (``conv1_1_bgrd``): converted at its own input width, then expanded."""
  kh, kw, cin, cout = target["kernel"].shape
  _expect_count(blobs, 2, "weight and bias")
  base_in = int(np.prod(blobs[0].shape)) // (cout * kh * kw)
  if base_in < 1 or base_in > cin:
    raise _Mismatch(f"{source_name} weight {tuple(blobs[0].shape)} cannot "
                    f"start a ({cout}, {cin}, {kh}, {kw}) convolution")
  base = jax.ShapeDtypeStruct((kh, kw, base_in, cout), np.float32)
  leaves, _ = _conv_leaves(blobs, base.shape)
  leaves["kernel"] = expand_input_channels(leaves["kernel"], cin)
  return leaves, (f"from {source_name}: {base_in} input channels copied, "
                  f"{cin - base_in} more their mean")


def _check_finite(params: Params) -> list[str]:
  return [f"{layer}: non-finite values in {leaf}"
          for layer, leaves in params.items() for leaf, value in leaves.items()
          if not np.isfinite(value).all()]


def from_caffe_layers(layers: Mapping[str, Sequence[np.ndarray]],
                      model_name: str, num_classes: int | None = None, *,
                      strict: bool = True,
                      optional_layers: Sequence[str] = (),
                      source: str = "the weights",
                      return_report: bool = False,
                      **model_options: Any):
  """Maps Caffe-layout blobs onto a model's parameters, by layer name.

  Args:
    layers: Caffe layer name -> that layer's blobs in Caffe layouts: conv OIHW
      plus bias; InnerProduct ``(out, in)`` plus bias (convolutionalised);
      Deconvolution ``(C_in, C_out, k, k)``; Scale ``(C,)``. Legacy 4-D blobs
      padded with leading 1s are accepted.
    model_name: One of ``models.MODEL_NAMES``; ``layers`` uses the
      reference's Caffe layer names for it (``conv1`` ... for
      ``fcn_alexnet``, ``conv1_1color`` ... for ``nyud_fcn32s_color_hha``,
      ``score_fr_sem`` ... for SIFT Flow).
    num_classes: The model's classes (None: the net's own); must match any
      score layers in ``layers``.
    strict: Require that the weights are exactly this model, or a base net
      (VGG16, CaffeNet) for it: no layers the model lacks (other than the
      ImageNet ``fc8``),
      and, when the weights carry a head (score/upscore/scale layers), every
      head layer. ``False`` copies whatever matches by name, as Caffe's
      ``copy_from`` does (e.g. an FCN-32s file into an FCN-16s). Trunk layers
      and shapes are checked either way.
    optional_layers: Head layers that may be missing even in strict mode,
      e.g. ``scale_pool4``/``scale_pool3`` for pytorch-fcn files, whose
      at-once model applies the scales in ``forward``.
    source: What ``layers`` came from, for messages.
    return_report: Also return a :class:`LoadReport`.
    **model_options: ``models.create_model`` options that change shapes
      (``width_divisor``).

  Returns:
    ``params`` (``{layer: {'kernel', 'bias' | 'scale'}}`` float32 NumPy arrays,
    the model's ``variables['params']``), or ``(params, report)``.

  Raises:
    WeightsError: listing every shape mismatch, missing trunk layer, unused
      layer (strict) and non-finite value, with hints.
  """
  model = models.create_model(model_name, num_classes, **model_options)
  num_classes = model.num_classes
  targets = models.param_shapes(model)
  renamed = {target: base for target, base in
             model.renamed_trunk_layers().items() if target not in layers}
  has_head = any(is_head_layer(name) for name in layers)
  params: Params = {}
  rows, problems, missing_required, unexpected = [], [], [], []
  for name, target in targets.items():
    shapes = _leaves_text(target)
    source_name = renamed.get(name, name)
    if source_name in layers:
      blobs = [np.asarray(b) for b in layers[source_name]]
      try:
        if source_name != name:
          leaves, note = _expanded_leaves(blobs, target, source_name)
        else:
          leaves, note = _convert_layer(blobs, target)
      except _Mismatch as e:
        problems.append(f"{name}: {e}")
        continue
      params[name] = {k: np.ascontiguousarray(v, np.float32)
                      for k, v in leaves.items()}
      rows.append(LayerRow(name, LOADED, shapes, _blobs_text(blobs), note))
      continue
    if not is_head_layer(name):
      missing_required.append(name)
      continue
    if strict and has_head and name not in optional_layers:
      missing_required.append(name)
    params[name], note = model.reference_init(
        name, {k: v.shape for k, v in target.items()})
    rows.append(LayerRow(name, MISSING, shapes, "", note))
  for name, blobs in layers.items():
    if name in targets or name in renamed.values():
      continue
    if name in IMAGENET_CLASSIFIER_LAYERS:
      note = "ImageNet classifier, not part of FCN"
    else:
      note = ""
      if strict:
        unexpected.append(name)
    rows.append(LayerRow(name, UNUSED, "", _blobs_text(blobs), note))
  problems += _check_finite(params)
  if missing_required:
    problems.append(f"missing from {source}: {', '.join(missing_required)}")
  if unexpected:
    problems.append(f"in {source} but not in {model_name}: "
                    f"{', '.join(unexpected)}")
  if problems:
    raise WeightsError(_load_error(problems, layers, model_name, num_classes,
                                   source, suggest_partial=bool(unexpected)))
  report = LoadReport(tuple(rows))
  return (params, report) if return_report else params


def _load_error(problems: list[str], layers: Mapping[str, Any],
                model_name: str, num_classes: int, source: str,
                suggest_partial: bool) -> str:
  """One message listing every problem, with the likely fix."""
  hints = []
  guess = guess_model(layers)
  trunk = models.NETS[model_name].trunk_spec
  if guess in models.TRUNKS and guess != trunk.name:
    users = [n.name for n in models.NETS.values() if n.trunk == guess]
    hints.append(f"{source} is a {guess} base net, not {trunk.name}: it "
                 f"starts {' or '.join(users)} (--model {users[0]}).")
  elif (guess and guess not in models.TRUNKS
        and model_name not in guess.split(" or ")):
    hints.append(f"{source} looks like {guess}, not {model_name}: convert it "
                 f"with --model {guess.split(' or ')[0]}.")
  trunk_names = {n for n in set(trunk.layer_names)
                 | models.model_layer_names(model_name)
                 if not is_head_layer(n)}
  if not trunk_names & set(layers):
    names = ", ".join(list(layers)[:8]) + (" ..." if len(layers) > 8 else "")
    hints.append(f"{source} has no {trunk.name.upper()} layer "
                 f"({trunk.layer_names[0]} ... fc7): its layers are {names}.")
  score = layers.get("score_fr")
  if score is not None and len(score) == 2:
    file_classes = int(np.size(score[1]))
    if file_classes != num_classes:
      hints.append(f"{source} scores {file_classes} classes, the model "
                   f"{num_classes}: pass --num_classes {file_classes} (or "
                   "convert a VGG16 trunk to train a new class count).")
  if suggest_partial:
    hints.append("To copy only the layers that match by name (Caffe's "
                 "copy_from), pass --allow_partial (strict=False).")
  text = f"cannot load {source} into {model_name} (num_classes={num_classes}):"
  text += "".join(f"\n  - {p}" for p in problems)
  if hints:
    text += "\n" + "\n".join(f"hint: {h}" for h in hints)
  return text


# --------------------------------------------------------------------------
# Staged initialisation: copy by name between params trees.
# --------------------------------------------------------------------------


def _like(value: Any, reference: Any) -> Any:
  """``value`` as the same array kind (NumPy or JAX) and dtype as ``reference``."""
  if isinstance(reference, jax.Array):
    return jax.numpy.asarray(value, dtype=reference.dtype)
  return np.asarray(value, dtype=np.asarray(reference).dtype)


def _upsampler_layout(source: Mapping[str, Any],
                      wanted: Mapping[str, tuple[int, ...]]
                      ) -> tuple[dict[str, np.ndarray], str]:
  """An upsampler kernel in the other ``upsample_mode``'s layout.

  Dense ``(k, k, C, C)`` kernels whose off-diagonal is zero (FCN's bilinear
  and per-class upsamplers) become depthwise ``(k, k, 1, C)`` kernels and back
  (see ``models.FCN.upsample_mode``).

  Raises:
    _Mismatch: Not an upsampler pair of layouts, or a dense kernel that mixes
      classes (it has no depthwise form).
  """
  if set(source) != {"kernel"} or set(wanted) != {"kernel"}:
    raise _Mismatch("")
  kernel = np.asarray(source["kernel"])
  shape = tuple(wanted["kernel"])
  if (len(shape) != 4 or kernel.ndim != 4 or kernel.shape[:2] != shape[:2]
      or kernel.shape[3] != shape[3]):
    raise _Mismatch("")
  c = shape[3]
  if kernel.shape[2] == c and shape[2] == 1:
    try:
      return ({"kernel": models.depthwise_kernel(kernel)},
              "dense -> depthwise")
    except ValueError as e:
      raise _Mismatch(f"{e}; use config.model.upsample_mode=dense") from None
  if kernel.shape[2] == 1 and shape[2] == c:
    return {"kernel": models.dense_kernel(kernel)}, "depthwise -> dense"
  raise _Mismatch("")


def copy_by_name(source_params: Mapping[str, Mapping[str, Any]],
                 target_params: Mapping[str, Mapping[str, Any]], *,
                 suffix: str = "",
                 renamed: Mapping[str, str] | None = None,
                 reinit_class_layers: bool = False,
                 ) -> tuple[Params, LoadReport]:
  """Initialises ``target_params`` from ``source_params`` layer by layer.

  This is the reference's staged training (docs/reference.md §5.3, §6.1):
  FCN-16s starts from a trained FCN-32s and FCN-8s from FCN-16s
  (``copy_from``); NYUD color-HHA's streams from a trained colour and a
  trained HHA net (``surgery.transplant`` with a suffix); color-D's
  ``conv1_1_bgrd`` from VGG16's ``conv1_1`` (``renamed``). Layers in both are
  copied; layers only in the target keep their initial values (new skip score
  layers zero, upsamplers bilinear); layers only in the source are reported
  unused.

  Args:
    source_params: The trained params (e.g. ``checkpointing.load(...).params``).
    target_params: The new model's initial params.
    suffix: Source layer ``L`` fills target layer ``L + suffix``; only the
      target layers with that suffix are considered (one stream of a
      two-stream net), the others are returned as they are.
    renamed: ``{target layer: source layer}`` for layers the source names
      differently (``model.renamed_trunk_layers()``); a narrower source
      kernel is widened by :func:`expand_input_channels`.
    reinit_class_layers: The source has another class count: head layers
      (score, upscore) whose shapes differ keep their initial values (zero
      scores, bilinear upsamplers) instead of being an error.

  Returns:
    ``(params, report)``: params with the target's structure and dtypes.

  Raises:
    WeightsError: a same-named layer differs in parameter names or shapes
      (all such layers are listed).
  """
  renamed = dict(renamed or {})
  params: dict[str, dict[str, Any]] = {}
  rows, problems, used = [], [], set()
  for name, target in target_params.items():
    params[name] = dict(target)
    if not name.endswith(suffix):
      continue
    shapes = _leaves_text(target)
    base = name[:len(name) - len(suffix)] if suffix else name
    if base not in source_params and renamed.get(name) in source_params:
      base = renamed[name]
    if base not in source_params:
      rows.append(LayerRow(name, MISSING, shapes, "", "kept initial value"))
      continue
    used.add(base)
    source = source_params[base]
    found = {k: tuple(np.shape(v)) for k, v in source.items()}
    wanted = {k: tuple(np.shape(v)) for k, v in target.items()}
    note = "" if base == name else f"from {base}"
    if found != wanted:
      try:
        if base != name and name in renamed:
          source, note = _widened(source, wanted, base)
        else:
          source, note = _upsampler_layout(source, wanted)
      except _Mismatch as e:
        if reinit_class_layers and is_head_layer(name):
          params[name] = dict(target)
          rows.append(LayerRow(name, MISSING, shapes, _leaves_text(source),
                               "other class count: kept initial value"))
          continue
        problems.append(f"{name}: {e}" if str(e) else
                        f"{name}: source {found}, target {wanted}")
        continue
    params[name] = {k: _like(source[k], v) for k, v in target.items()}
    rows.append(LayerRow(name, LOADED, shapes, _leaves_text(source), note))
  for name, source in source_params.items():
    if name not in used:
      rows.append(LayerRow(name + suffix if suffix else name, UNUSED, "",
                           _leaves_text(source),
                           f"source {name}" if suffix else ""))
  if problems:
    raise WeightsError(
        "cannot copy layers by name, shapes differ (check num_classes and "
        "width_divisor):" + "".join(f"\n  - {p}" for p in problems))
  return params, LoadReport(tuple(rows))


def _widened(source: Mapping[str, Any], wanted: Mapping[str, tuple[int, ...]],
             base: str) -> tuple[dict[str, np.ndarray], str]:
  """A renamed first convolution with more input channels (color-D)."""
  kernel = np.asarray(source.get("kernel"))
  shape = wanted.get("kernel", ())
  if (set(source) != set(wanted) or kernel.ndim != 4 or len(shape) != 4
      or kernel.shape[:2] != shape[:2] or kernel.shape[3] != shape[3]
      or kernel.shape[2] > shape[2]
      or np.shape(source.get("bias")) != wanted.get("bias")):
    raise _Mismatch("")
  widened = dict(source, kernel=expand_input_channels(kernel, shape[2]))
  return widened, (f"from {base}: {kernel.shape[2]} input channels copied, "
                   f"{shape[2] - kernel.shape[2]} more their mean")
