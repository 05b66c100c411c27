"""Pretrained weights: Caffe-layout blobs onto the FCNs, and the params checkpoint.

The one seam is :func:`from_caffe_layers`. Every reader in
:mod:`fcn_jax.readers` turns its file into ``{caffe_layer: [blobs]}`` in Caffe
layouts, and this module maps those blobs onto a model's parameters by name:

* convolutions OIHW -> HWIO; InnerProduct ``(out, C*k*k)`` blobs (VGG16's
  fc6/fc7) are convolutionalised by the C-order reshape (FCN_SPEC.md §4.5);
* Deconvolution ``(C_in, C_out, k, k)`` -> HWIO, spatially flipped (§4.3);
* every shape is checked, and all mismatches are reported in one error;
* layers the file lacks start as Caffe starts them: score layers at zero,
  upsamplers bilinear (``surgery.interp``), Scale layers at their constants.
  Layers the file has but the model lacks are reported as unused.

Converted weights are stored as a *params checkpoint*, a directory with the
Orbax-saved params under ``params/`` and ``fcn_jax_weights.json`` metadata:
the model, class count, the preprocessing the weights expect, the source file
and its SHA-256, and the load report. :func:`load_params` reads it back;
training, evaluation and prediction take their preprocessing from it through
:func:`resolve_preprocessing`, so a contradicting setting is an error. Staged
training (FCN-32s -> 16s -> 8s) copies layers by name with
:func:`copy_by_name`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import uuid
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from fcn_jax import models
from fcn_jax import preprocessing as preprocessing_lib
from fcn_jax.preprocessing import Preprocessing

FORMAT_VERSION = 1
METADATA_FILENAME = "fcn_jax_weights.json"
PARAMS_DIRNAME = "params"
# Layers a file may hold that no FCN has: VGG16's 1000-way ImageNet classifier.
IMAGENET_CLASSIFIER_LAYERS = ("fc8",)
TRUNK_LAYERS = tuple(
    [f"conv{b}_{i}" for b, (_, depth) in enumerate(models.VGG16_BLOCKS, 1)
     for i in range(1, depth + 1)] + ["fc6", "fc7"])

Params = dict[str, dict[str, np.ndarray]]


class WeightsError(ValueError):
  """Weights that do not fit a model, or a directory that is not a checkpoint."""


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
# Model structure helpers.
# --------------------------------------------------------------------------


def layer_order(model: models.FCN) -> list[str]:
  """The model's layers in forward order, as the Caffe nets list them."""
  names = list(TRUNK_LAYERS) + ["score_fr"]
  for skip in model.head.skips:
    names.append(skip.upsampler.name)
    if skip.scale is not None:
      names.append(skip.scale_layer)
    names.append(skip.score_layer)
  return names + [model.head.final.name]


def param_shapes(model: models.FCN) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
  """The model's parameter shapes (in forward order), without allocating them."""
  shapes = jax.eval_shape(lambda: models.init_variables(model))["params"]
  order = {name: i for i, name in enumerate(layer_order(model))}
  return dict(sorted(shapes.items(), key=lambda kv: order.get(kv[0], len(order))))


@functools.lru_cache(maxsize=None)
def model_layer_names(model_name: str) -> frozenset[str]:
  """The parameterised layers of a model (independent of widths and classes)."""
  model = models.create_model(model_name, width_divisor=64)
  return frozenset(param_shapes(model))


def _is_head_layer(name: str) -> bool:
  return name.startswith(("score", "upscore", "scale_"))


def guess_model(layer_names: Iterable[str]) -> str | None:
  """Which network a set of layer names is: a model name, ``vgg16`` or None."""
  names = set(layer_names) - set(IMAGENET_CLASSIFIER_LAYERS)
  if names == set(TRUNK_LAYERS):
    return "vgg16"
  unscaled = {n for n in names if not n.startswith("scale_")}
  matches = [m for m in models.MODEL_NAMES
             if names == model_layer_names(m)
             or (unscaled == names and names == {
                 n for n in model_layer_names(m) if not n.startswith("scale_")})]
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
  """Deconvolution ``(C_in, C_out, k, k)`` -> flipped HWIO (FCN_SPEC §4.3)."""
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


def _initial_leaves(name: str, target: Mapping[str, Any],
                    model: models.FCN) -> tuple[dict[str, np.ndarray], str]:
  """How Caffe starts a layer the weights lack (FCN_SPEC §5.3, §6.3)."""
  if set(target) == {"kernel"}:  # an upsampler: surgery.interp
    size, _, _, channels = target["kernel"].shape
    return {"kernel": models.bilinear_kernel(size, channels)}, "bilinear"
  if set(target) == {"scale"}:
    value = next(s.scale for s in model.head.skips if s.scale_layer == name)
    return ({"scale": np.full(target["scale"].shape, value, np.float32)},
            f"constant {value:g}")
  return ({k: np.zeros(v.shape, np.float32) for k, v in target.items()},
          "zeros")


def _check_finite(params: Params) -> list[str]:
  return [f"{layer}: non-finite values in {leaf}"
          for layer, leaves in params.items() for leaf, value in leaves.items()
          if not np.isfinite(value).all()]


def from_caffe_layers(layers: Mapping[str, Sequence[np.ndarray]],
                      model_name: str, num_classes: int = 21, *,
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
    model_name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s_atonce``.
    num_classes: The model's classes; must match any score layers in
      ``layers``.
    strict: Require that the weights are exactly this model, or a VGG16
      trunk for it: no layers the model lacks (other than VGG16's ``fc8``),
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
  targets = param_shapes(model)
  has_head = any(_is_head_layer(name) for name in layers)
  params: Params = {}
  rows, problems, missing_required, unexpected = [], [], [], []
  for name, target in targets.items():
    shapes = _leaves_text(target)
    if name in layers:
      blobs = [np.asarray(b) for b in layers[name]]
      try:
        leaves, note = _convert_layer(blobs, target)
      except _Mismatch as e:
        problems.append(f"{name}: {e}")
        continue
      params[name] = {k: np.ascontiguousarray(v, np.float32)
                      for k, v in leaves.items()}
      rows.append(LayerRow(name, LOADED, shapes, _blobs_text(blobs), note))
      continue
    if not _is_head_layer(name):
      missing_required.append(name)
      continue
    if strict and has_head and name not in optional_layers:
      missing_required.append(name)
    params[name], note = _initial_leaves(name, target, model)
    rows.append(LayerRow(name, MISSING, shapes, "", note))
  for name, blobs in layers.items():
    if name in targets:
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
  if guess and guess != "vgg16" and model_name not in guess.split(" or "):
    hints.append(f"{source} looks like {guess}, not {model_name}: convert it "
                 f"with --model {guess.split(' or ')[0]}.")
  if not any(name in layers for name in TRUNK_LAYERS):
    names = ", ".join(list(layers)[:8]) + (" ..." if len(layers) > 8 else "")
    hints.append(f"{source} has no VGG16 layer (conv1_1 ... fc7): its layers "
                 f"are {names}.")
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
                 target_params: Mapping[str, Mapping[str, Any]],
                 reinit_class_layers: bool = False,
                 ) -> tuple[Params, LoadReport]:
  """Initialises ``target_params`` from ``source_params`` layer by layer.

  This is the reference's staged training (FCN_SPEC §5.3): FCN-16s starts from
  a trained FCN-32s and FCN-8s from FCN-16s. Layers in both are copied;
  layers only in the target keep their initial values (new skip score layers
  zero, upsamplers bilinear); layers only in the source are reported unused.

  Args:
    source_params: The trained params (e.g. from :func:`load_params`).
    target_params: The new model's initial params.
    reinit_class_layers: The source has another class count: head layers
      (score, upscore) whose shapes differ keep their initial values (zero
      scores, bilinear upsamplers) instead of being an error.

  Returns:
    ``(params, report)``: params with the target's structure and dtypes.

  Raises:
    WeightsError: a same-named layer differs in parameter names or shapes
      (all such layers are listed).
  """
  params: dict[str, dict[str, Any]] = {}
  rows, problems = [], []
  for name, target in target_params.items():
    shapes = _leaves_text(target)
    if name not in source_params:
      params[name] = dict(target)
      rows.append(LayerRow(name, MISSING, shapes, "", "kept initial value"))
      continue
    source = source_params[name]
    found = {k: tuple(np.shape(v)) for k, v in source.items()}
    wanted = {k: tuple(np.shape(v)) for k, v in target.items()}
    note = ""
    if found != wanted:
      try:
        source, note = _upsampler_layout(source, wanted)
      except _Mismatch as e:
        if reinit_class_layers and _is_head_layer(name):
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
    if name not in target_params:
      rows.append(LayerRow(name, UNUSED, "", _leaves_text(source)))
  if problems:
    raise WeightsError(
        "cannot copy layers by name, shapes differ (check num_classes and "
        "width_divisor):" + "".join(f"\n  - {p}" for p in problems))
  return params, LoadReport(tuple(rows))


# --------------------------------------------------------------------------
# Preprocessing that travels with the weights.
# --------------------------------------------------------------------------


def _describe(p: Preprocessing) -> str:
  return (f"{p.name}: {p.channel_order}, x{p.scale:g}, mean "
          f"{tuple(round(m, 5) for m in p.mean)}, std "
          f"{tuple(round(s, 5) for s in p.std)}")


def resolve_preprocessing(requested: str | Preprocessing | None,
                          metadata_preprocessing: Mapping[str, Any] | None,
                          force: bool = False, *,
                          force_flag: str = "config.force_preprocessing",
                          ) -> Preprocessing:
  """The preprocessing to use: the weights', unless deliberately overridden.

  Args:
    requested: An explicit choice (a preset name such as ``caffe_vgg`` or a
      :class:`Preprocessing`), or ``None``/``""`` to follow the weights.
    metadata_preprocessing: ``metadata['preprocessing']`` of the weights'
      checkpoint, or None when there is no metadata (e.g. a random init).
    force: Accept a ``requested`` that contradicts the weights.
    force_flag: The setting that passes ``force``, named in the error.

  Returns:
    The weights' preprocessing when nothing is requested (``CAFFE_VGG`` when
    there is no metadata either), else the requested one.

  Raises:
    ValueError: ``requested`` contradicts the weights and ``force`` is False.
  """
  recorded = (Preprocessing.from_dict(metadata_preprocessing)
              if metadata_preprocessing else None)
  if requested is None or requested == "":
    return recorded or preprocessing_lib.CAFFE_VGG
  chosen = (requested if isinstance(requested, Preprocessing)
            else preprocessing_lib.get_preprocessing(requested))
  if recorded is None or chosen.matches(recorded):
    return chosen
  if force:
    logging.warning("Using preprocessing %s although the weights expect %s "
                    "(forced).", _describe(chosen), _describe(recorded))
    return chosen
  raise ValueError(
      f"preprocessing {_describe(chosen)} contradicts the weights, which "
      f"expect {_describe(recorded)}. Mismatched preprocessing silently costs "
      f"several mean IU. Leave the preprocessing unset to use the weights', or "
      f"set {force_flag}=True to override.")


def preprocessing_from_metadata(metadata: Mapping[str, Any]) -> Preprocessing:
  """The preprocessing recorded in a params checkpoint's metadata."""
  return Preprocessing.from_dict(metadata["preprocessing"])


# --------------------------------------------------------------------------
# The params checkpoint: Orbax params + JSON metadata.
# --------------------------------------------------------------------------


def make_metadata(model_name: str, num_classes: int,
                  model_options: Mapping[str, Any] | None,
                  preprocessing: Preprocessing,
                  source: Mapping[str, Any] | None = None,
                  report: LoadReport | None = None) -> dict[str, Any]:
  """The metadata of a params checkpoint.

  Args:
    model_name: The model the params belong to.
    num_classes: Its class count.
    model_options: Options that shape the params (``width_divisor``, ...);
      ``dtype`` is a compute choice and is not recorded.
    preprocessing: What inputs the weights expect.
    source: ``{'file', 'format', 'sha256'}`` of the converted file, if any.
    report: The load report, if any.
  """
  options = {k: v for k, v in (model_options or {}).items() if k != "dtype"}
  return {
      "format_version": FORMAT_VERSION,
      "model": model_name,
      "num_classes": int(num_classes),
      "model_options": options,
      "preprocessing": preprocessing.to_dict(),
      "source": dict(source or {}),
      "report": report.to_dict() if report is not None else None,
  }


def model_from_metadata(metadata: Mapping[str, Any],
                        **options: Any) -> models.FCN:
  """Builds the model a checkpoint's params belong to (``options`` override)."""
  merged = {**metadata.get("model_options", {}), **options}
  return models.create_model(metadata["model"], metadata["num_classes"],
                             **merged)


def _first_missing_ancestor(path: str) -> str | None:
  missing = None
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def save_params(directory: str, params: Mapping[str, Any],
                metadata: Mapping[str, Any], *, overwrite: bool = False) -> str:
  """Writes a params checkpoint atomically: all of it, or nothing.

  Args:
    directory: The checkpoint directory to create.
    params: The params tree (NumPy or JAX arrays).
    metadata: JSON-serialisable metadata (see :func:`make_metadata`).
    overwrite: Replace an existing non-empty ``directory``.

  Returns:
    The absolute path of the checkpoint.

  Raises:
    WeightsError: ``directory`` exists and is a file, or is non-empty and
      ``overwrite`` is False.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  directory = os.path.abspath(directory)
  if os.path.isfile(directory):
    raise WeightsError(f"{directory} is a file; choose a directory to write.")
  if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
    raise WeightsError(f"{directory} exists and is not empty; choose another "
                       "--output or pass --overwrite.")
  text = json.dumps({**metadata, "format_version": FORMAT_VERSION}, indent=2)
  parent = os.path.dirname(directory)
  created = _first_missing_ancestor(parent)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-"
                     f"{uuid.uuid4().hex[:8]}")
  backup = tmp + "-old"
  try:
    os.mkdir(tmp)
    host = jax.tree.map(np.asarray, dict(params))
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, PARAMS_DIRNAME), host)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, METADATA_FILENAME), "w") as f:
      f.write(text + "\n")
    if os.path.exists(directory):
      os.rename(directory, backup)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if os.path.exists(backup) and not os.path.exists(directory):
      os.rename(backup, directory)
    if created:
      shutil.rmtree(created, ignore_errors=True)
    raise
  shutil.rmtree(backup, ignore_errors=True)
  return directory


def is_params_checkpoint(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, METADATA_FILENAME))


def load_metadata(directory: str) -> dict[str, Any]:
  """Reads and checks a params checkpoint's metadata only (cheap)."""
  path = os.path.join(directory, METADATA_FILENAME)
  if not os.path.isdir(directory):
    raise WeightsError(f"{directory}: no such directory (expected a params "
                       "checkpoint written by python -m fcn_jax.convert).")
  if not os.path.isfile(path):
    raise WeightsError(
        f"{directory} is not an fcn_jax params checkpoint: it has no "
        f"{METADATA_FILENAME}. Convert weight files with python -m "
        "fcn_jax.convert; training checkpoints are restored with "
        "--config.checkpoint options instead.")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WeightsError(f"{path}: unreadable metadata ({e}).") from None
  if not isinstance(metadata, dict):
    raise WeightsError(f"{path}: the metadata is not a JSON object.")
  version = metadata.get("format_version")
  if version != FORMAT_VERSION:
    raise WeightsError(f"{path}: format_version {version!r}; this fcn_jax "
                       f"reads version {FORMAT_VERSION}.")
  for key in ("model", "num_classes", "preprocessing"):
    if key not in metadata:
      raise WeightsError(f"{path}: metadata lacks {key!r}.")
  return metadata


def load_params(directory: str) -> tuple[Params, dict[str, Any]]:
  """Reads a params checkpoint written by :func:`save_params`.

  Returns:
    ``(params, metadata)``: NumPy params keyed by Caffe layer names, and the
    metadata dict (model, num_classes, model_options, preprocessing, source,
    report).

  Raises:
    WeightsError: ``directory`` is not such a checkpoint, or its params do not
      fit the model its metadata names.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  directory = os.path.abspath(directory)
  metadata = load_metadata(directory)
  params_dir = os.path.join(directory, PARAMS_DIRNAME)
  if not os.path.isdir(params_dir):
    raise WeightsError(f"{directory}: the {PARAMS_DIRNAME}/ directory is "
                       "missing; convert the weights again.")
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(params_dir)
  except Exception as e:  # Orbax raises several types for damaged data.
    raise WeightsError(f"{params_dir}: cannot restore ({type(e).__name__}: "
                       f"{e}); convert the weights again.") from None
  params = jax.tree.map(np.asarray, dict(restored))
  expected = param_shapes(model_from_metadata(metadata))
  found = jax.tree.map(np.shape, params)
  wanted = jax.tree.map(lambda x: tuple(x.shape), expected)
  if found != wanted:
    raise WeightsError(
        f"{directory}: its params do not fit {metadata['model']} with "
        f"num_classes={metadata['num_classes']} and options "
        f"{metadata.get('model_options', {})}; convert the weights again.")
  return params, metadata
