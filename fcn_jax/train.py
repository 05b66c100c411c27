"""Training and evaluation: the train state, the steps and the loops.

``train_and_evaluate(config, workdir)`` trains a model as the config says
(docs/reference.md §5 by default), evaluating on the whole evaluation split
every ``eval_every_steps`` updates, checkpointing, and resuming from the
workdir's latest checkpoint when there is one. ``evaluate_checkpoint(config,
source)`` evaluates a saved model: it is what ``--config.mode=eval`` and
``python -m fcn_jax.evaluate`` both run, with the same evaluation as during
training (:func:`evaluate`). ``run`` dispatches on ``config.mode``.

The steps are written for one device's shard of a batch; :mod:`fcn_jax.parallel`
runs them data-parallel. The train state is replicated, gradients are
averaged over devices, and the loss is normalised over the global batch, so N
devices give the same update as one device with the whole batch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fcn_jax import checkpointing
from fcn_jax import data_sources
from fcn_jax import default_config
from fcn_jax import distributed
from fcn_jax import input_config
from fcn_jax import input_pipeline
from fcn_jax import logging_utils
from fcn_jax import losses
from fcn_jax import metrics as metrics_lib
from fcn_jax import models
from fcn_jax import optim
from fcn_jax import parallel
from fcn_jax import preprocessing as preprocessing_lib
from fcn_jax import tta as tta_lib
from fcn_jax import visualize
from fcn_jax import voc
from fcn_jax import weights


CONFIG_FILE = "config.json"
EVAL_RESULTS_FILE = "eval_results.json"
CONFUSION_FILE = "confusion.png"
SCRATCH_INITS = ("he_normal", "flax_default")


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: Batches consumed so far. With ``optim.iter_size = k`` an optimizer
      update (a Caffe iteration) takes ``k`` batches, so this is ``k`` times
      the update count that the training loop, the logs and the checkpoint
      directories count; each batch draws its own dropout keys from it.
    params: Model parameters, keyed by Caffe layer name.
    opt_state: The optax state (momentum, schedule counts, accumulators).
    rng: Raw PRNG key for dropout and loss sampling; each batch folds in the
      step and the device index.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  def to_dict(self) -> dict[str, Any]:
    return {"step": self.step, "params": self.params,
            "opt_state": self.opt_state, "rng": self.rng}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainState":
    return cls(step=jnp.asarray(d["step"], jnp.int32), params=d["params"],
               opt_state=d["opt_state"], rng=jnp.asarray(d["rng"]))


# --------------------------------------------------------------------------
# Config, model and state.
# --------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects inconsistent or unknown values with a message naming the field.

  Each group is checked by the module that owns it (the model by
  :class:`fcn_jax.models.ModelSpec`, the optimizer and loss by
  :func:`fcn_jax.optim.validate_config`); this adds the run-level fields.
  """
  if config.mode not in default_config.MODES:
    raise ValueError(f"config.mode must be one of {default_config.MODES}, "
                     f"got {config.mode!r}")
  resolve_num_classes(config)
  spec = model_spec(config)
  optim.validate_config(config.optim, spec.num_classes)
  if spec.multi_head and tuple(config.optim.class_weights):
    raise ValueError(f"config.optim.class_weights weighs one head's classes; "
                     f"{spec.name} has the heads {sorted(spec.head_classes)}")
  parallel.check_mode(config.parallel)
  if config.scratch_init not in SCRATCH_INITS:
    raise ValueError(f"config.scratch_init must be one of {SCRATCH_INITS}, "
                     f"got {config.scratch_init!r}")
  tta_from_config(config)
  for field in ("batch_size", "eval_batch_size", "log_every_steps",
                "checkpoint.every_steps"):
    value = config
    for part in field.split("."):
      value = getattr(value, part)
    if value < 1:
      raise ValueError(f"config.{field} must be >= 1, got {value}")
  for path in init_sources(config.init_from, spec).values():
    # Before any work: a wrong path fails at once.
    check_local_path(path, "config.init_from")
    checkpointing.existing_source(path)
  if config.num_train_steps < 0:
    raise ValueError(f"config.num_train_steps must be >= 0, got "
                     f"{config.num_train_steps}")


def resolve_num_classes(config: ml_collections.ConfigDict) -> None:
  """Sets ``config.model.num_classes = 0`` to the dataset's class count.

  Raises:
    ValueError: The dataset records no class count.
  """
  if config.model.num_classes:
    return
  names = data_sources.dataset_class_names(config.dataset.name,
                                           config.dataset.data_dir)
  if names is None:
    raise ValueError(f"config.model.num_classes=0 takes the dataset's class "
                     f"count, but {config.dataset.name} records none: set "
                     "config.model.num_classes")
  config.model.num_classes = len(names)


def model_spec(config: ml_collections.ConfigDict) -> models.ModelSpec:
  """The model ``config.model`` describes (checked)."""
  return models.ModelSpec.from_dict(config.model.to_dict())


def create_model(model_config: ml_collections.ConfigDict) -> models.FCN:
  """The FCN described by ``config.model``."""
  return models.ModelSpec.from_dict(model_config.to_dict()).create()


def tta_from_config(config: ml_collections.ConfigDict
                    ) -> tta_lib.TestTimeAugmentation:
  """Evaluation's test-time augmentation, ``config.tta`` (none by default)."""
  return tta_lib.TestTimeAugmentation(bool(config.tta.flip),
                                      tuple(config.tta.scales))


def scratch_init(params: Any, scheme: str, rng: jax.Array) -> Any:
  """Re-draws trainable trunk kernels for training without pretrained weights.

  ``"he_normal"`` draws every ``conv*``/``fc*`` kernel from
  ``N(0, 2 / fan_in)`` (He et al. 2015), which keeps ReLU activations at a
  constant scale through the 15 layers; Flax's default (LeCun normal) halves
  their variance at every layer, so a deep trunk without normalisation barely
  learns from scratch. Score layers stay at zero and upsamplers bilinear, as
  in the reference. ``"flax_default"`` keeps the model's own init.
  """
  if scheme == "flax_default":
    return params
  if scheme != "he_normal":
    raise ValueError(f"config.scratch_init must be one of {SCRATCH_INITS}, "
                     f"got {scheme!r}")
  init = jax.nn.initializers.he_normal(in_axis=(0, 1, 2), out_axis=3)
  params = dict(params)
  for index, layer in enumerate(sorted(params)):
    if layer.startswith(("conv", "fc")):
      kernel = params[layer]["kernel"]
      params[layer] = {**params[layer], "kernel": init(
          jax.random.fold_in(rng, index), kernel.shape, kernel.dtype)}
  return params


def init_sources(init_from: str, spec: models.ModelSpec) -> dict[str, str]:
  """The sources ``config.init_from`` names, keyed by stream suffix.

  ``"PATH"`` initialises the whole model (``{"": PATH}``). A two-stream net
  (NYUD color-HHA) takes one trained net per stream, as the reference's
  ``surgery.transplant(..., suffix)``: ``"color=PATH,hha=PATH"`` copies each
  source layer ``L`` into ``L + suffix`` (docs/reference.md §5.3, §6.1).

  Raises:
    ValueError: A stream that the model does not have, or a malformed entry.
  """
  text = init_from.strip()
  if not text:
    return {}
  if "=" not in text:
    return {"": text}
  suffixes = [s.suffix for s in spec.net.streams if s.suffix]
  sources = {}
  for entry in text.split(","):
    suffix, sep, path = (part.strip() for part in entry.partition("="))
    if not sep or not path or suffix not in suffixes or suffix in sources:
      raise ValueError(
          f"config.init_from={init_from!r}: give one path, or one "
          f"STREAM=PATH per stream of {spec.name} (streams: "
          f"{suffixes or 'none, it has one trunk'}), separated by commas")
    sources[suffix] = path
  return sources


def initial_params(config: ml_collections.ConfigDict, model: models.FCN,
                   rng: jax.Array) -> tuple[Any, dict[str, Any] | None]:
  """Fresh parameters, overwritten by name from ``config.init_from``
  (:func:`init_sources`; renamed first layers such as color-D's
  ``conv1_1_bgrd`` from the source's ``conv1_1``, §8.2).

  Returns:
    ``(params, source_metadata)``; the metadata (of the first source) is None
    without init_from.
  """
  params = models.init_variables(model, rng)["params"]
  sources = init_sources(config.init_from, model_spec(config))
  if not sources:
    logging.warning("No init_from: the trunk starts from random weights "
                    "(%s).", config.scratch_init)
    return scratch_init(params, config.scratch_init, rng), None
  metadata = None
  for suffix, path in sources.items():
    source = checkpointing.load(path)
    # Layers a weights export did not read from its file (a VGG16 export's
    # zero score_fr and bilinear upscore, made for its class count) are not
    # weights: the model's own reference init stands.
    made_up = set(((source.metadata.get("report") or {}).get("missing"))
                  or ())
    params, report = weights.copy_by_name(
        {k: v for k, v in source.params.items() if k not in made_up}, params,
        suffix=suffix, renamed=model.renamed_trunk_layers(),
        reinit_class_layers=source.spec.num_classes != model.num_classes)
    logging.info("Initialised %sfrom %s: %s\n%s",
                 f"the {suffix} stream " if suffix else "",
                 source.describe(), report.summary(), report.table())
    metadata = metadata or source.metadata
  return params, metadata


def resolve_preprocessing(config: ml_collections.ConfigDict,
                          metadata: Mapping[str, Any] | None
                          ) -> preprocessing_lib.Preprocessing:
  """``config.preprocessing``, checked against the weights' own (and their
  HHA / depth preparations against fcn_jax's)."""
  preprocessing_lib.check_source_preprocessing(
      (metadata or {}).get("source_preprocessing"), "the weights")
  return preprocessing_lib.resolve(
      config.preprocessing or None, (metadata or {}).get("preprocessing"),
      config.force_preprocessing, force_flag="config.force_preprocessing")


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     model: models.FCN) -> optax.GradientTransformation:
  """The optimizer training uses for ``model`` (Caffe SGD of
  ``config.optim`` over ``config.num_train_steps`` updates)."""
  return optim.create_model_optimizer(config.optim, params, model,
                                      int(config.num_train_steps))


def create_train_state(params: Any, tx: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=rng)


# --------------------------------------------------------------------------
# Steps (one device's shard; collectives through fcn_jax.parallel).
# --------------------------------------------------------------------------


def train_step(state: TrainState, batch: Mapping[str, Any], *,
               model: models.FCN, tx: optax.GradientTransformation,
               loss_normalization: str = "sum",
               loss_sampling_p: float = 1.0,
               class_weights: Sequence[float] | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step (one ``iter_size`` micro-step) on a shard of the batch.

  The loss is normalised over the global batch: the summed loss by the
  global number of images, or the valid-pixel loss by the global (weighted)
  number of valid pixels. Each device differentiates its share of that global
  loss, scaled by the device count so that ``pmean`` of the gradients is the
  gradient of the global loss. A multi-head net (SIFT Flow) adds the losses
  of its heads, each normalised on its own, with weight 1 each, as the
  reference's two SoftmaxWithLoss layers do (docs/reference.md §8.3).

  Args:
    state: The replicated train state.
    batch: ``image`` float32 ``[b, H, W, C]`` (a dict of them keyed by input
      name for a multi-input net) and ``label`` int ``[b, H, W]`` (a dict
      keyed by head for a multi-head net); 255 = ignored.
    model: The FCN.
    tx: The optimizer.
    loss_normalization: ``"sum"`` or ``"valid"`` (see :mod:`fcn_jax.losses`).
    loss_sampling_p: Keep probability of each pixel in the loss.
    class_weights: Optional per-class loss weights (single-head nets).

  Returns:
    ``(new_state, metrics)`` with the global ``loss``, ``valid_pixels`` and
    training ``pixel_acc`` of the batch (of the first head; a multi-head net
    adds ``<head>_loss`` and ``<head>_pixel_acc`` for every head).
  """
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           parallel.device_index())
  dropout_rng, sampling_rng = jax.random.split(rng)
  labels = model.per_head(batch["label"])
  classes = model.head_classes
  shape = next(iter(labels.values())).shape
  keep = losses.sample_keep_mask(sampling_rng, shape, loss_sampling_p)
  pixel_weights = {h: losses.pixel_weights(labels[h], classes[h],
                                           class_weights=class_weights,
                                           keep_mask=keep)
                   for h in classes}
  total_normalizer = parallel.psum({
      h: losses.normalizer(pixel_weights[h], shape[0], loss_normalization)
      for h in classes})
  num_devices = parallel.device_count_in_step()

  def head_sum(per_head):
    return functools.reduce(jnp.add, per_head.values())

  def loss_fn(params):
    logits = model.per_head(model.apply(
        {"params": params}, batch["image"], train=True,
        rngs={"dropout": dropout_rng}))
    loss_sum = {h: losses.weighted_loss_sum(logits[h], labels[h],
                                            pixel_weights[h])
                for h in classes}
    share = head_sum({h: losses.normalized_loss(loss_sum[h],
                                                total_normalizer[h])
                      for h in classes}) * num_devices
    return share, (loss_sum, logits)

  grads, (loss_sum, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  totals = {}
  for h, c in classes.items():
    valid = (labels[h] >= 0) & (labels[h] < c)
    correct = valid & (jnp.argmax(logits[h], axis=-1) == labels[h])
    totals[h] = {"loss_sum": loss_sum[h],
                 "valid": jnp.sum(valid).astype(jnp.float32),
                 "correct": jnp.sum(correct).astype(jnp.float32)}
  totals = parallel.psum(totals)
  head_metrics = {  # In the heads' order (psum returns sorted dicts).
      h: {"loss": losses.normalized_loss(totals[h]["loss_sum"],
                                         total_normalizer[h]),
          "valid_pixels": totals[h]["valid"],
          "pixel_acc": totals[h]["correct"] / jnp.maximum(totals[h]["valid"],
                                                          1.0)}
      for h in classes}
  metrics = dict(next(iter(head_metrics.values())))
  if model.multi_head:
    metrics["loss"] = head_sum({h: m["loss"] for h, m in head_metrics.items()})
    for h, m in head_metrics.items():
      metrics[f"{h}_loss"] = m["loss"]
      metrics[f"{h}_pixel_acc"] = m["pixel_acc"]
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def make_train_fn(model: models.FCN, tx: optax.GradientTransformation,
                  config: ml_collections.ConfigDict,
                  devices: Sequence[jax.Device], *,
                  donate_state: bool = True) -> Callable[..., Any]:
  """The data-parallel train step over ``devices``, as training runs it.

  Args:
    model: The FCN.
    tx: The optimizer (:func:`fcn_jax.optim.create_model_optimizer`).
    config: Reads ``optim.loss_normalization``, ``optim.loss_sampling_p``,
      ``optim.class_weights`` and ``parallel``.
    devices: From :func:`fcn_jax.parallel.devices_for_batch`.
    donate_state: Reuse the state's buffers for the new state.

  Returns:
    ``(state, sharded_batch) -> (new_state, metrics)``; see :func:`train_step`.
  """
  step = functools.partial(
      train_step, model=model, tx=tx,
      loss_normalization=config.optim.loss_normalization,
      loss_sampling_p=float(config.optim.loss_sampling_p),
      class_weights=tuple(config.optim.class_weights) or None)
  return parallel.replicate_step(step, devices,
                                 per_device_outputs=(False, False),
                                 donate_state=donate_state,
                                 mode=config.parallel)


def eval_step(params: Any, batch: Mapping[str, Any], *,
              model: models.FCN, loss_normalization: str = "sum",
              tta: tta_lib.TestTimeAugmentation = tta_lib.TestTimeAugmentation()
              ) -> tuple[dict[str, Any], Any]:
  """Scores a shard of an evaluation batch.

  Padding examples (``valid`` False) and pixels labelled outside
  ``[0, num_classes)`` (255: void and padding) never count.

  Args:
    params: Model parameters (replicated).
    batch: ``image``, ``label`` (dicts for multi-input / multi-head nets, as
      in :func:`train_step`) and optionally ``valid`` bool ``[b]``.
    model: The FCN.
    loss_normalization: How each image's loss is normalised (``"sum"``: the
      sum over its valid pixels, as score.py reports; ``"valid"``: the mean).
      A multi-head net's image loss is the sum over its heads.
    tta: Test-time augmentation (:mod:`fcn_jax.tta`; the reference used
      none, the default).

  Returns:
    ``(totals, predictions)``: totals summed over devices — the int32
    ``confusion`` matrix ``[C, C]`` (rows = ground truth), ``loss_sum`` over
    the images and ``num_images`` — and this device's argmax predictions
    ``[b, H, W]``. A multi-head net gives ``confusion`` and the predictions
    as dicts keyed by head.
  """
  classes = model.head_classes
  labels = model.per_head(batch["label"])
  image_valid = batch.get("valid")
  if image_valid is None:
    image_valid = jnp.ones(next(iter(labels.values())).shape[:1], bool)
  logits = model.per_head(tta(
      lambda x: model.apply({"params": params}, x, train=False),
      batch["image"]))
  predictions, confusion, per_image = {}, {}, 0.0
  for h, c in classes.items():
    head_labels = jnp.where(image_valid[:, None, None],
                            labels[h].astype(jnp.int32), voc.IGNORE_LABEL)
    predictions[h] = jnp.argmax(logits[h], axis=-1).astype(jnp.int32)
    pixel_weights = losses.pixel_weights(head_labels, c)
    head_loss = jnp.sum(pixel_weights * losses.pixel_cross_entropy(
        logits[h], head_labels), axis=(1, 2))
    if loss_normalization == "valid":
      head_loss = head_loss / jnp.maximum(jnp.sum(pixel_weights, (1, 2)),
                                          1.0)
    per_image = per_image + head_loss
    confusion[h] = metrics_lib.confusion_matrix(head_labels, predictions[h],
                                                c)
  if not model.multi_head:
    confusion = confusion[models.SINGLE_OUTPUT]
    predictions = predictions[models.SINGLE_OUTPUT]
  totals = parallel.psum({
      "confusion": confusion,
      "loss_sum": jnp.sum(jnp.where(image_valid, per_image, 0.0)),
      "num_images": jnp.sum(image_valid).astype(jnp.int32),
  })
  return totals, predictions


# --------------------------------------------------------------------------
# Evaluation over a split.
# --------------------------------------------------------------------------


def make_eval_fn(model: models.FCN, config: ml_collections.ConfigDict,
                 tta: tta_lib.TestTimeAugmentation | None = None,
                 devices: Sequence[jax.Device] | None = None
                 ) -> tuple[Callable[..., Any], list[jax.Device]]:
  """The data-parallel eval step and the devices it runs on.

  Args:
    model: The FCN.
    config: Reads ``eval_batch_size``, ``optim.loss_normalization`` and
      ``tta`` and ``parallel``.
    tta: Overrides ``config.tta``.
    devices: The devices to run on; default: those
      :func:`fcn_jax.parallel.devices_for_batch` picks for
      ``eval_batch_size``.
  """
  if devices is None:
    devices = parallel.devices_for_batch(config.eval_batch_size,
                                         "eval_batch_size")
  step = functools.partial(eval_step, model=model,
                           loss_normalization=config.optim.loss_normalization,
                           tta=tta or tta_from_config(config))
  return parallel.replicate_step(step, devices,
                                 per_device_outputs=(False, True),
                                 mode=config.parallel), devices


def evaluate(p_eval_step: Callable[..., Any], devices: Sequence[jax.Device],
             params: Any, batches: Iterable[Mapping[str, np.ndarray]], *,
             num_classes: int | Mapping[str, int],
             class_names: Sequence[str] | Mapping[str, Sequence[str]]
             | None = None,
             preprocessing: preprocessing_lib.Preprocessing | None = None,
             num_tiles: int = 0,
             exclude_classes: Sequence[str] = ()
             ) -> tuple[dict[str, Any], list[np.ndarray]]:
  """Evaluates on every batch of a split; metrics from the summed matrix.

  This is the evaluation of training, of ``--config.mode=eval`` and of
  ``python -m fcn_jax.evaluate`` (through :func:`evaluate_checkpoint`).

  Args:
    p_eval_step: From :func:`make_eval_fn`.
    devices: Its devices.
    params: The parameters to evaluate.
    batches: One pass over the split (host-local batches).
    num_classes: ``C``, or ``{head: C}`` for a multi-head net
      (:func:`eval_classes`).
    class_names: Names for ``per_class_iu`` (``{head: names}`` for a
      multi-head net).
    preprocessing: To turn inputs back into images for the tiles.
    num_tiles: How many image | label | prediction tiles to return (from the
      first valid examples of this process; the first head's).
    exclude_classes: Class names left out of the means
      (``config.eval.exclude_classes``; ``"head:name"`` for one head's, see
      :func:`fcn_jax.metrics.excluded_classes`); they need ``class_names``.

  Returns:
    ``(metrics, tiles)``: ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``,
    ``per_class_iu``, ``loss`` (mean per image) and ``num_images``, computed
    once from the confusion matrix of the whole split over all hosts, and
    that ``confusion_matrix`` (``[C][C]`` ints, rows = ground truth). For a
    multi-head net the four metrics, ``per_class_iu`` and
    ``confusion_matrix`` are the first head's, and ``heads`` holds them for
    every head (SIFT Flow's geometric accuracy is
    ``heads["geo"]["pixel_acc"]``). A head with excluded classes lists
    their names under ``excluded_classes``.

  Raises:
    ValueError: An excluded class that is not a class of the heads.
  """
  multi_head = isinstance(num_classes, Mapping)
  classes = (dict(num_classes) if multi_head
             else {models.SINGLE_OUTPUT: num_classes})
  names = (dict(class_names) if multi_head and class_names
           else {models.SINGLE_OUTPUT: class_names})
  hist = {h: np.zeros((c, c), np.int64) for h, c in classes.items()}
  first = next(iter(classes))
  exclude = {h: [] for h in classes}
  if exclude_classes:
    exclude = metrics_lib.excluded_classes(
        exclude_classes, _head_class_names(classes, names))
  loss_sum, num_images = 0.0, 0
  tiles = []
  for batch in batches:
    totals, predictions = p_eval_step(
        params, _device_batch(batch, ("image", "label", "valid"),
                              len(devices)))
    totals = jax.device_get(totals)
    confusion = totals["confusion"] if multi_head else {
        first: totals["confusion"]}
    for h in classes:
      hist[h] += np.asarray(confusion[h], np.int64)
    loss_sum += float(totals["loss_sum"])
    num_images += int(totals["num_images"])
    if len(tiles) < num_tiles and preprocessing is not None:
      predictions = parallel.unshard(
          predictions[first] if multi_head else predictions)
      images = jax.tree.leaves(batch["image"])[0]
      labels = batch["label"][first] if multi_head else batch["label"]
      valid = np.asarray(batch.get("valid", np.ones(len(predictions), bool)))
      for i in np.flatnonzero(valid)[:num_tiles - len(tiles)]:
        tiles.append(visualize.make_tile(
            preprocessing.invert(np.asarray(images[i])[..., :3]),
            np.asarray(labels[i]), predictions[i]))
  # The step's psum spans every device of every host: the totals are global.
  heads = {}
  for h, counts in hist.items():
    heads[h] = metrics_lib.segmentation_metrics(counts, names.get(h),
                                                exclude[h])
    if exclude[h]:
      head_names = names.get(h) or voc.class_names(len(counts))
      heads[h]["excluded_classes"] = [head_names[k] for k in exclude[h]]
    heads[h]["confusion_matrix"] = counts.tolist()
  results = dict(heads[first])
  if multi_head:
    results["heads"] = heads
  results["loss"] = loss_sum / num_images if num_images else float("nan")
  results["num_images"] = int(num_images)
  return results, tiles


def _head_class_names(classes: Mapping[str, int],
                      names: Mapping[str, Sequence[str] | None]
                      ) -> dict[str, list[str]]:
  return {h: list(names.get(h) or voc.class_names(c))
          for h, c in classes.items()}


def check_eval_exclusions(config: ml_collections.ConfigDict,
                          model: models.FCN | models.ModelSpec,
                          class_names: Any) -> None:
  """Refuses, before training, an excluded class the model does not have."""
  exclude = eval_exclusions(config)
  if not exclude:
    return
  classes = (dict(model.head_classes) if model.multi_head
             else {models.SINGLE_OUTPUT: model.num_classes})
  names = (dict(class_names or {}) if model.multi_head
           else {models.SINGLE_OUTPUT: class_names})
  metrics_lib.excluded_classes(exclude, _head_class_names(classes, names))


def eval_exclusions(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """``config.eval.exclude_classes`` (empty for configs without it)."""
  if "eval" not in config or "exclude_classes" not in config.eval:
    return ()
  return tuple(str(name) for name in config.eval.exclude_classes)


def eval_classes(spec: models.ModelSpec | models.FCN
                 ) -> int | dict[str, int]:
  """What :func:`evaluate` takes as ``num_classes`` for a model."""
  return spec.head_classes if spec.multi_head else spec.num_classes


def _report_eval(writer: logging_utils.MetricWriter, step: int,
                 results: Mapping[str, Any], tiles: Sequence[np.ndarray],
                 class_names: Sequence[str] | Mapping[str, Sequence[str]]
                 ) -> None:
  logging.info("Evaluation at step %d on %d images:\n%s", step,
               results["num_images"],
               metrics_lib.format_report(results, class_names))
  writer.write_scalars(step, "eval", results)
  writer.write_images(step, {f"eval/tile_{i}": tile
                             for i, tile in enumerate(tiles)})
  writer.flush()


# --------------------------------------------------------------------------
# Loops.
# --------------------------------------------------------------------------


def _diverged(checkpointer: checkpointing.Checkpointer, what: str,
              unusable_step: int) -> NonFiniteLossError:
  """The error that ends a diverged run, after setting aside the checkpoint
  of ``unusable_step`` if one was saved (its state is known to be bad).

  A state is good only if it is finite and so is the loss computed from it
  (the next step's): the loss of step ``k`` is computed before step ``k``'s
  update, from the state after step ``k - 1``.
  """
  checkpointer.wait()
  aside = ""
  if unusable_step in checkpointer.all_steps():
    path = checkpointer.set_aside(unusable_step, checkpointing.DIVERGED_SUFFIX)
    aside = (f"the checkpoint of step {unusable_step}, which leads to it, is "
             f"set aside as {path}; ")
  latest = checkpointer.latest_step()
  kept = (f"the newest good checkpoint is {checkpointer.step_directory(latest)}"
          " (rerunning resumes from it)" if latest is not None else
          "no checkpoint is left (rerunning starts from the beginning)")
  return NonFiniteLossError(
      f"{what}. Stopped without saving this state; {aside}{kept}. Lower "
      "optim.base_lr (or add optim.warmup_steps), and check that it suits "
      "optim.loss_normalization (the summed loss needs a rate ~1e-10, the "
      "normalised one ~1e-4).")


def _check_finite(pending: list[tuple[int, Any]],
                  checkpointer: checkpointing.Checkpointer) -> list[float]:
  """Fetches pending step losses; raises on the first non-finite one."""
  values = [float(v) for v in jax.device_get([m["loss"] for _, m in pending])]
  for (step, _), value in zip(pending, values):
    if not np.isfinite(value):
      raise _diverged(checkpointer,
                      f"Training loss became {value} at step {step}",
                      unusable_step=step - 1)
  return values


def _check_state_finite(host_state: Mapping[str, Any], step: int,
                        checkpointer: checkpointing.Checkpointer) -> None:
  """Raises unless the parameters and optimizer state are all finite."""
  trained = {"params": host_state["params"],
             "opt_state": host_state["opt_state"]}
  bad = checkpointing.non_finite_leaves(trained)
  if bad:
    total = len(jax.tree_util.tree_leaves(trained))
    raise _diverged(
        checkpointer, f"The train state after step {step} holds NaN or "
        f"infinite values in {len(bad)} of {total} arrays ("
        f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})",
        unusable_step=step)


def _device_batch(batch: Mapping[str, Any], keys: Sequence[str],
                  num_devices: int) -> dict[str, np.ndarray]:
  """The arrays a step needs from a host batch, split over the devices."""
  return parallel.shard({k: batch[k] for k in keys if k in batch},
                        num_devices)


def _workdir_metadata(config: ml_collections.ConfigDict,
                      preprocessing: preprocessing_lib.Preprocessing,
                      step: int, class_names: Sequence[str] | None
                      ) -> dict[str, Any]:
  return checkpointing.make_metadata(
      model_spec(config), preprocessing, class_names=class_names,
      source={"format": "fcn_jax training checkpoint"}, step=int(step),
      config=config.to_json_best_effort())


def check_dataset_classes(config: ml_collections.ConfigDict,
                          loaded: checkpointing.LoadedModel | None = None
                          ) -> list[str] | None:
  """Checks that the model predicts the dataset's classes (their count).

  Args:
    config: Reads ``dataset.name``, ``dataset.data_dir`` and, without
      ``loaded``, ``model.num_classes``.
    loaded: A saved model to evaluate (default: the config's model).

  Returns:
    The dataset's class names (for a multi-head net ``{head: names}``, each
    head's from its label feature), or None if it records none.

  Raises:
    ValueError: The counts differ; the message gives the fix.
  """
  spec = model_spec(config) if loaded is None else loaded.spec
  if spec.multi_head:
    return _check_head_classes(config, spec, loaded)
  names = data_sources.dataset_class_names(config.dataset.name,
                                           config.dataset.data_dir)
  num_classes = (int(config.model.num_classes) if loaded is None
                 else loaded.spec.num_classes)
  if names is None or len(names) == num_classes:
    return names
  if loaded is None:
    model = f"config.model.num_classes={num_classes}"
    fix = (f"Set --config.model.num_classes={len(names)} (init_from weights "
           "of another class count keep their trunk; their score layers "
           "start afresh)")
  else:
    model = f"the model in {loaded.path} has num_classes={num_classes}"
    fix = "Evaluate it on the dataset it was trained on"
  effect = (f"its labels {num_classes}..{len(names) - 1} would be ignored"
            if num_classes < len(names) else
            f"classes {len(names)}..{num_classes - 1} would never be seen")
  raise ValueError(f"{model}, but the dataset {config.dataset.name} has "
                   f"{len(names)} classes: {effect}. {fix}.")


def _check_head_classes(config: ml_collections.ConfigDict,
                        spec: models.ModelSpec,
                        loaded: checkpointing.LoadedModel | None
                        ) -> dict[str, list[str]] | None:
  """:func:`check_dataset_classes` for a multi-head net: each head against
  the classes of its label feature (``config.dataset.label_features``)."""
  layout = input_config.ExampleLayout.from_config(
      config if loaded is None else _with_model_name(config, spec.name))
  names = {}
  for head, feature in layout.labels:
    head_names = data_sources.label_class_names(
        config.dataset.name, feature, config.dataset.data_dir)
    if head_names is None:
      return None
    wanted = spec.head_classes[head]
    if len(head_names) != wanted:
      where = ("config.model" if loaded is None
               else f"the model in {loaded.path}")
      raise ValueError(
          f"{where}: the {head} head of {spec.name} has {wanted} classes, but "
          f"{feature} of the dataset {config.dataset.name} has "
          f"{len(head_names)}: check config.dataset.label_features and "
          "config.model.num_classes.")
    names[head] = head_names
  return names


def _with_model_name(config: ml_collections.ConfigDict,
                     name: str) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  config.model.name = name
  return config


def check_same_model(config: ml_collections.ConfigDict,
                     metadata: Mapping[str, Any], where: str) -> None:
  """Checks that ``config.model`` is the model a checkpoint was trained with.

  Raises:
    ValueError: They differ; the message names the fields and the fixes.
    checkpointing.DamagedCheckpointError: The metadata describes no model.
  """
  requested = model_spec(config)
  try:
    saved = checkpointing.model_spec(metadata, dtype=requested.dtype)
  except (KeyError, TypeError, ValueError) as e:
    raise checkpointing.DamagedCheckpointError(
        where, f"its metadata describes no model ({e!r})") from None
  differ = [f"{field}={getattr(requested, field)!r} (the checkpoint has "
            f"{getattr(saved, field)!r})" for field in models.ModelSpec.fields()
            if getattr(requested, field) != getattr(saved, field)]
  if differ:
    workdir = os.path.dirname(os.path.dirname(where))
    raise ValueError(
        f"cannot resume {where} with another model: config.model."
        f"{', config.model.'.join(differ)}. Rerun with the model it was "
        f"trained with (see {os.path.join(workdir, CONFIG_FILE)}), or train in "
        f"a new --workdir (with --config.init_from={workdir} to start from "
        "its weights).")


@dataclasses.dataclass
class _Resumed:
  step: int
  state: TrainState
  preprocessing: preprocessing_lib.Preprocessing
  train_iter: Any


def _resume(config: ml_collections.ConfigDict,
            checkpointer: checkpointing.Checkpointer,
            make_template: Callable[[], TrainState]) -> _Resumed | None:
  """Restores the newest intact checkpoint, setting damaged ones aside.

  First the newest readable metadata is checked against the model of
  ``config`` (before anything is built or written). Then every step, newest
  first, is read in full (metadata, parameters, train state, data iterator
  position) into ``make_template()``'s structure and checked (a finite
  state); one that cannot be read is renamed ``N.corrupt`` (one with
  non-finite values ``N.diverged``), nothing deleted, once an older one has
  restored.

  Returns:
    The restored run, or None when the workdir has no checkpoint.

  Raises:
    ValueError: The config does not fit the checkpoint (another model,
      optimizer or iter_size).
    checkpointing.CheckpointError: No checkpoint can be read; nothing was
      moved.
  """
  steps = checkpointer.all_steps()
  if not steps:
    return None
  for step in reversed(steps):
    try:
      check_same_model(config, checkpointer.read_metadata(step),
                       checkpointer.step_directory(step))
      break
    except checkpointing.DamagedCheckpointError:
      continue  # Judged below.
  template = parallel.to_host(make_template().to_dict())
  iter_size = int(config.optim.iter_size)
  damaged = []
  for step in reversed(steps):
    where = checkpointer.step_directory(step)
    resumed, error, suffix = None, None, checkpointing.DAMAGED_SUFFIX
    try:
      metadata = checkpointer.read_metadata(step)
      check_same_model(config, metadata, where)
      preprocessing = resolve_preprocessing(config, metadata)
      train_iter = input_pipeline.create_train_iterator(config, preprocessing)
      restored, _ = checkpointer.restore(step, template,
                                         data_iterator=train_iter)
      if int(restored["step"]) != step * iter_size:
        raise ValueError(
            f"{where} has consumed {int(restored['step'])} batches in {step} "
            f"updates, which is not optim.iter_size={iter_size} per update: "
            "resume with the iter_size it was trained with, or start a new "
            "workdir (init_from the checkpoint)")
      bad = checkpointing.non_finite_leaves(restored)
      if bad:
        suffix = checkpointing.DIVERGED_SUFFIX
        raise checkpointing.DamagedCheckpointError(
            where, f"{len(bad)} arrays hold NaN or infinite values "
            f"({', '.join(bad[:3])})")
      resumed = _Resumed(step, TrainState.from_dict(restored), preprocessing,
                         train_iter)
    except checkpointing.DamagedCheckpointError as e:
      error = e
    if parallel.all_processes(resumed is not None):
      break
    damaged.append((step, error.reason if error else
                    "another process could not read it", suffix))
  else:
    raise checkpointing.CheckpointError(
        f"no intact checkpoint in {checkpointer.directory} ("
        + "; ".join(f"step {s}: {reason}" for s, reason, _ in damaged)
        + "); nothing was moved. Restore them from a backup, or move "
        f"{checkpointer.directory} away to train from the start.")
  for step, reason, suffix in damaged:
    path = checkpointer.set_aside(step, suffix)
    logging.warning("Checkpoint %s cannot be resumed (%s); set it aside as %s.",
                    checkpointer.step_directory(step), reason, path)
  logging.info("Resumed from %s.", checkpointer.step_directory(resumed.step))
  return resumed


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> TrainState:
  """Trains (and evaluates) as the config says; resumes from the workdir.

  Resuming takes the newest intact checkpoint of the workdir (see
  :func:`_resume`); the model of ``config`` must be the one it was trained
  with. A SIGTERM, from start-up on, saves (or, before the first step, just
  stops) and returns. The training stops with :class:`NonFiniteLossError`
  when the loss or the train state is no longer finite; only states that
  are finite, and (but for the newest) whose next loss was, are kept.

  Args:
    config: A config from ``fcn_jax.default_config`` (see ``configs/``).
    workdir: Where checkpoints, metrics and TensorBoard files go.

  Returns:
    The final train state.
  """
  validate_config(config)
  class_names = check_dataset_classes(config)
  workdir = os.path.abspath(workdir)
  is_main = parallel.is_main_process()
  evaluate_during_training = config.mode == "train_and_eval"
  num_steps = int(config.num_train_steps)
  iter_size = int(config.optim.iter_size)
  # From here on a SIGTERM (a preemption) stops the run cleanly.
  preemption = distributed.PreemptionWatcher()
  checkpointer = writer = None
  try:
    os.makedirs(workdir, exist_ok=True)
    model = model_spec(config).create()
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    checkpointer = checkpointing.Checkpointer(
        workdir, max_to_keep=config.checkpoint.max_to_keep,
        keep_best=config.checkpoint.keep_best if evaluate_during_training
        else 0)
    resuming = bool(checkpointer.all_steps())

    @functools.cache
    def initial_state():  # When resuming, only a template to restore into.
      if resuming:
        params = models.init_variables(model, init_rng)["params"]
        metadata = None
      else:
        params, metadata = initial_params(config, model, init_rng)
      tx = create_optimizer(config, params, model)
      return create_train_state(params, tx, state_rng), tx, metadata

    resumed = _resume(config, checkpointer, lambda: initial_state()[0])
    state, tx, source_metadata = initial_state()
    if resumed is None:
      start_step = 0
      preprocessing = resolve_preprocessing(config, source_metadata)
      train_iter = input_pipeline.create_train_iterator(config, preprocessing)
    else:
      start_step, state = resumed.step, resumed.state
      preprocessing, train_iter = resumed.preprocessing, resumed.train_iter
    run_metadata = _workdir_metadata(config, preprocessing, start_step,
                                     class_names)
    if is_main:
      checkpointing.write_json(os.path.join(workdir, CONFIG_FILE),
                               run_metadata)
    class_names = checkpointing.class_names(run_metadata)
    check_eval_exclusions(config, model, class_names)
    if preemption.should_stop(start_step):
      logging.warning("Preempted during start-up: stopped before step %d, "
                      "with nothing new to save; rerun the same command to "
                      "resume.", start_step + 1)
      return state
    logging.info("Model %s (%d classes), preprocessing %s; training steps "
                 "%d -> %d (parallel=%s).", config.model.name,
                 config.model.num_classes, preprocessing.name, start_step,
                 num_steps, config.parallel)

    train_devices = parallel.devices_for_batch(config.batch_size)
    state = parallel.replicate(state, train_devices)  # Else step 2 recompiles.
    p_train_step = make_train_fn(model, tx, config, train_devices)
    p_eval_step, eval_devices = make_eval_fn(model, config)
    lr_fn = optim.create_learning_rate_fn(config.optim, num_steps)
    writer = logging_utils.MetricWriter(workdir, enabled=is_main,
                                        resume_step=start_step)
    progress = logging_utils.Progress(num_steps,
                                      config.batch_size * iter_size,
                                      start_step)
    eval_every = int(config.eval_every_steps)

    pending = []  # (step, device metrics) not yet checked for finiteness.
    for step in range(start_step + 1, num_steps + 1):
      for _ in range(iter_size):
        batch = next(train_iter)
        state, step_metrics = p_train_step(
            state, _device_batch(batch, ("image", "label"),
                                 len(train_devices)))
        pending.append((step, step_metrics))
      is_last = step == num_steps
      preempted = preemption.should_stop(step)
      do_eval = evaluate_during_training and (
          is_last or (eval_every > 0 and step % eval_every == 0))
      do_save = (is_last or do_eval or preempted
                 or step % config.checkpoint.every_steps == 0)
      do_log = is_last or step % config.log_every_steps == 0
      if step == start_step + 1:  # Exclude compilation from the rates.
        jax.block_until_ready(state)
        progress.restart(step)
      if not (do_log or do_eval or do_save):
        continue
      step_losses = _check_finite(pending, checkpointer)
      if do_log:
        loss = float(np.mean(step_losses))
        scalars = {"loss": loss, "learning_rate": float(lr_fn(step - 1)),
                   "pixel_acc": float(pending[-1][1]["pixel_acc"])}
        scalars.update(progress.update(step, loss, scalars["learning_rate"]))
        writer.write_scalars(step, "train", scalars)
      pending = []
      if do_save:  # Before evaluating: a diverged state is neither.
        host_state = parallel.to_host(state.to_dict())
        _check_state_finite(host_state, step, checkpointer)
      eval_results = None
      if do_eval:
        eval_results, tiles = evaluate(
            p_eval_step, eval_devices, state.params,
            input_pipeline.create_eval_iterator(config, preprocessing),
            num_classes=eval_classes(model), class_names=class_names,
            preprocessing=preprocessing, num_tiles=config.num_eval_tiles,
            exclude_classes=eval_exclusions(config))
        _report_eval(writer, step, eval_results, tiles, class_names)
      if do_save:
        parallel.check_same_across_processes(host_state, "train states")
        logging.info("Saving step %d (parameters fingerprint %s).", step,
                     parallel.fingerprint(host_state["params"]))
        metadata = _workdir_metadata(config, preprocessing, step, class_names)
        if eval_results is not None:
          metadata["metrics"] = logging_utils.to_json(eval_results)
        checkpointer.save(step, host_state,
                          metadata=metadata, data_iterator=train_iter,
                          metrics=eval_results)
      if preempted:
        logging.warning("Preempted: saved step %d; rerun the same command to "
                        "resume.", step)
        break
  finally:
    preemption.close()
    if checkpointer is not None:
      checkpointer.wait()
      checkpointer.close()
    if writer is not None:
      writer.close()
  return state


def evaluate_checkpoint(config: ml_collections.ConfigDict, source: str, *,
                        step: str | int = checkpointing.DEFAULT_STEP,
                        output_dir: str | None = None,
                        log_to_workdir: bool = False,
                        progress: bool = False) -> dict[str, Any]:
  """Evaluates a saved model on ``config.dataset.eval_split``.

  The one evaluation of a saved model, run by ``--config.mode=eval`` and by
  ``python -m fcn_jax.evaluate``: the checkpoint (step picked by
  :func:`fcn_jax.checkpointing.load`'s rule) rebuilds its own model, in
  ``config.model.dtype``; its recorded preprocessing is checked against
  ``config.preprocessing``; the split is scored by :func:`evaluate`, as
  during training, with ``config.tta``.

  Args:
    config: The run config (dataset, input, eval batch, tta, preprocessing).
    source: A training workdir, checkpoint directory or weights export.
    step: ``"best"`` (default), ``"latest"`` or a step number.
    output_dir: Where to write ``eval_results.json`` and ``confusion.png``
      (None: nowhere).
    log_to_workdir: Also write the metrics line, scalars and tiles to
      ``output_dir``'s ``metrics.jsonl`` and TensorBoard (a training workdir).
    progress: Show a progress bar.

  Returns:
    The report written to ``eval_results.json``: ``checkpoint``, ``step``,
    ``step_reason``, ``dataset``, ``split``, ``tta``, ``class_names`` and
    ``metrics`` (the results of :func:`evaluate`).
  """
  validate_config(config)
  loaded = checkpointing.load(source, step, dtype=config.model.dtype)
  check_dataset_classes(config, loaded)
  logging.info("Evaluating %s.", loaded.describe())
  preprocessing = resolve_preprocessing(config, loaded.metadata)
  tta = tta_from_config(config)
  p_eval_step, devices = make_eval_fn(loaded.model, config, tta)
  # The inputs and labels of the saved model (its name picks the features).
  batches = input_pipeline.create_eval_iterator(
      _with_model_name(config, loaded.spec.name), preprocessing)
  results, tiles = evaluate(
      p_eval_step, devices, loaded.params,
      logging_utils.track(batches, "batches", "evaluating", progress),
      num_classes=eval_classes(loaded.spec),
      class_names=loaded.class_names,
      preprocessing=preprocessing,
      num_tiles=config.num_eval_tiles if log_to_workdir else 0,
      exclude_classes=eval_exclusions(config))
  report = {
      "checkpoint": loaded.path, "step": loaded.step,
      "step_reason": loaded.step_reason, "dataset": config.dataset.name,
      "split": config.dataset.eval_split,
      "eval_pad_size": int(config.input.eval_pad_size),
      "tta": {"flip": tta.flip, "scales": list(tta.scales)},
      "class_names": loaded.class_names, "metrics": results}
  if output_dir is not None and parallel.is_main_process():
    if log_to_workdir:
      writer = logging_utils.MetricWriter(output_dir)
      try:
        _report_eval(writer, loaded.step or 0, results, tiles,
                     loaded.class_names)
      finally:
        writer.close()
    write_eval_results(output_dir, report)
  return report


def write_eval_results(output_dir: str, report: Mapping[str, Any]) -> None:
  """Writes ``eval_results.json`` (strict JSON, NaN as null) and
  ``confusion.png`` (the row-normalised confusion matrix; a multi-head net's
  first head, and ``confusion_<head>.png`` for every head)."""
  os.makedirs(output_dir, exist_ok=True)
  checkpointing.write_json(os.path.join(output_dir, EVAL_RESULTS_FILE),
                           report)
  results = report["metrics"]
  names = report.get("class_names")
  charts = {CONFUSION_FILE: (results, names)}
  if "heads" in results:
    first = next(iter(results["heads"]))
    charts = {CONFUSION_FILE: (results, (names or {}).get(first))}
    stem, ext = os.path.splitext(CONFUSION_FILE)
    for head, head_results in results["heads"].items():
      charts[f"{stem}_{head}{ext}"] = (head_results, (names or {}).get(head))
  for file_name, (head_results, head_names) in charts.items():
    hist = np.asarray(head_results["confusion_matrix"])
    title = (f"mean IU {100 * head_results['mean_iu']:.2f}%, pixel acc. "
             f"{100 * head_results['pixel_acc']:.2f}%")
    visualize.confusion_matrix_image(
        hist, head_names or voc.class_names(len(hist)), title=title).save(
            os.path.join(output_dir, file_name))


def check_local_path(path: str, what: str) -> None:
  """Rejects URLs (``gs://...``): the workdir and weights use file APIs.

  Raises:
    ValueError: ``path`` is a URL; the message says how to mount the bucket.
  """
  if "://" in path:
    raise ValueError(
        f"{what}={path}: fcn_jax reads and writes workdirs and weights through "
        "the file system, not URLs. Mount the bucket (e.g. gcsfuse "
        "--implicit-dirs --rename-dir-limit=100000 BUCKET /gcs/BUCKET, as "
        "launch/tpu_run.sh does with GCS_BUCKET=...) and pass /gcs/BUCKET/...")


def run(config: ml_collections.ConfigDict, workdir: str,
        step: str | int = checkpointing.DEFAULT_STEP) -> Any:
  """Runs ``config.mode``: train, eval or train_and_eval.

  ``eval`` evaluates the workdir's checkpoint picked by ``step`` (else
  ``config.init_from``) and writes its report into the workdir.
  """
  check_local_path(workdir, "--workdir")
  if config.mode != "eval":
    return train_and_evaluate(config, workdir)
  workdir = os.path.abspath(workdir)
  source = workdir
  if not os.path.isdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)):
    if not config.init_from:
      raise FileNotFoundError(
          f"nothing to evaluate: {workdir} has no "
          f"{checkpointing.CHECKPOINT_DIR}/ and config.init_from is empty")
    source = config.init_from
  report = evaluate_checkpoint(config, source, step=step, output_dir=workdir,
                               log_to_workdir=True)
  logging.info("Wrote %s.", os.path.join(workdir, EVAL_RESULTS_FILE))
  return report

