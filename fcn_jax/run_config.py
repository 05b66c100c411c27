"""The run config, resolved once: :func:`resolve` turns a config into a
:class:`Run` (MaxText's ``pyconfig.initialize``).

Every check of a config runs in :func:`resolve`, before anything is built or
written (the workdir lock and ``config.json`` come after): its fields against
:mod:`fcn_jax.default_config`, the model (:class:`fcn_jax.models.ModelSpec`),
the optimizer, the batches against the input settings and the process
count, the dataset (opened once: its splits and class names per head), the
evaluation exclusions and the ``init_from`` weights. The :class:`Run` holds
every derived value (the model spec with its class count settled, the input
config and layout, whether each phase runs at shape buckets, the test-time
augmentation, what ``config.json`` records), so no consumer re-derives them.
:func:`check_same_model` and :func:`resolve_preprocessing` check a run
against its checkpoints and weights. The fields and their meaning are in
:mod:`fcn_jax.default_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from typing import Any, Mapping

from absl import logging
import ml_collections

from fcn_jax import checkpointing
from fcn_jax import datasets
from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax.data import data_sources
from fcn_jax.data import input_config
from fcn_jax.data import input_pipeline
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.evaluation import metrics as metrics_lib
from fcn_jax.inference import tta as tta_lib
from fcn_jax.models import losses


CONFIG_FILE = "config.json"


SCRATCH_INITS = ("he_normal", "flax_default")


# What a Run is resolved for: training (config.mode train or
# train_and_eval), evaluating a saved model (``loaded``), or compiling the
# steps without data or weights (the dry run).
PURPOSES = ("train", "eval", "dry_run")

# Machine-local fields that config.json does not record (a cache path of
# this machine means nothing on another).
MACHINE_LOCAL_FIELDS = ("compilation_cache_dir",)


@dataclasses.dataclass(frozen=True)
class Run:
  """A config, checked, with every value derived from it (:func:`resolve`).

  Attributes:
    config: The resolved config (a copy: ``model`` with its class count
      settled, or the loaded model's; locked; treat it as read-only). The
      consumers take the Run and read the fields nothing derives from
      (``seed``, ``parallel``, the checkpoint and log cadences) here.
    purpose: One of :data:`PURPOSES`.
    spec: The model, checked; ``num_classes`` is never 0.
    dataset: The dataset, opened once (:class:`data_sources.Dataset`): the
      pipeline reads its splits from here; None for a dry run of a dataset
      that is not prepared.
    class_names: The dataset's class names (``{head: names}`` for a
      multi-head net), or None if it records none.
    splits: The prepared dataset's splits (empty when not yet generated, or
      for a dry run).
    input: The input pipeline's fields (:class:`InputConfig`).
    layout: Which dataset features make the inputs and each head's labels.
    tta: Evaluation's test-time augmentation.
    exclusions: ``config.eval.exclude_classes``, checked.
    init_sources: ``config.init_from``'s paths keyed by stream suffix
      (training only; empty otherwise).
    train_bucketed: Whether training runs at shape buckets.
    eval_bucketed: Whether evaluation runs at shape buckets.
    evaluates: Whether this run evaluates (train_and_eval, eval).
    recorded: What ``config.json`` records as the run's config (JSON; the
      :data:`MACHINE_LOCAL_FIELDS` left out).
  """

  config: ml_collections.ConfigDict
  purpose: str
  spec: models.ModelSpec
  dataset: data_sources.Dataset | None
  class_names: Any
  splits: tuple[str, ...]
  input: input_config.InputConfig
  layout: input_config.ExampleLayout
  tta: tta_lib.TestTimeAugmentation
  exclusions: tuple[str, ...]
  init_sources: Mapping[str, str]
  train_bucketed: bool
  eval_bucketed: bool
  evaluates: bool
  recorded: str

  @property
  def optim(self) -> ml_collections.ConfigDict:
    """``config.optim``: the optimizer and loss settings (checked)."""
    return self.config.optim


def resolve(config: ml_collections.ConfigDict, purpose: str = "train",
            loaded: checkpointing.LoadedModel | None = None,
            process_count: int | None = None) -> Run:
  """Checks ``config`` and derives every value a command needs, once.

  Nothing is written and no checkpoint is read here; the dataset's builder
  is opened once (metadata only) and, for training, its splits' records are
  read for their image sizes (:func:`fcn_jax.data.input_pipeline.check_image_sizes`).

  Args:
    config: A config from :mod:`fcn_jax.default_config` (not modified).
    purpose: One of :data:`PURPOSES`.
    loaded: For ``eval``: the saved model to evaluate; its model replaces
      ``config.model`` (its name picks the input features and heads), and
      ``config.init_from`` is not read.
    process_count: The JAX processes sharing the batches; default
      ``jax.process_count()``.

  Returns:
    The :class:`Run`.

  Raises:
    errors.UserError: A value that is wrong or does not fit the dataset,
      the model or the processes; the message names the field and the fix.
    FileNotFoundError: The dataset is not prepared, or ``init_from`` does
      not exist.
  """
  if purpose not in PURPOSES:
    raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
  if config.mode not in default_config.MODES:
    raise errors.UserError(f"config.mode must be one of "
                           f"{default_config.MODES}, got {config.mode!r}")
  unknown = default_config.unknown_fields(config)
  if unknown:
    field, close = unknown[0]
    raise errors.UserError(
        f"unknown config field config.{field}"
        + (f" (did you mean {close!r}?)" if close else "")
        + "; every field, with its meaning, is in fcn_jax/default_config.py")
  config = copy.deepcopy(config)
  config.unlock()
  if loaded is not None:
    config.model = ml_collections.ConfigDict(loaded.spec.to_dict())
    config.init_from = ""  # The checkpoint is given.
  evaluates = purpose == "eval" or config.mode != "train"
  try:  # The dataset, opened once for the run: its metadata, no records.
    dataset = data_sources.Dataset(config.dataset.name,
                                   config.dataset.data_dir)
  except FileNotFoundError:
    if purpose != "dry_run" or not config.model.num_classes:
      raise
    dataset = None  # A dry run compiles without the data.
  metadata = dataset.metadata if dataset is not None else None
  if not config.model.num_classes:
    classes = datasets.dataset_classes(metadata)
    if classes is None:
      raise errors.UserError(
          f"config.model.num_classes=0 takes the dataset's class count, but "
          f"{config.dataset.name} records none: set config.model.num_classes")
    config.model.num_classes = classes[0]
  spec = models.ModelSpec.from_dict(config.model.to_dict())
  _validate_optim(config.optim, spec.num_classes)
  if spec.multi_head and tuple(config.optim.class_weights):
    raise errors.UserError(
        f"config.optim.class_weights weighs one head's classes; {spec.name} "
        f"has the heads {sorted(spec.head_classes)}")
  parallel.check_mode(config.parallel)
  if config.scratch_init not in SCRATCH_INITS:
    raise errors.UserError(f"config.scratch_init must be one of "
                           f"{SCRATCH_INITS}, got {config.scratch_init!r}")
  # Evaluation's test-time augmentation (none by default).
  tta = tta_lib.TestTimeAugmentation(bool(config.tta.flip),
                                     tuple(config.tta.scales))
  for field in ("batch_size", "eval_batch_size", "log_every_steps",
                "checkpoint.every_steps"):
    value = get_field(config, field)
    if value < 1:
      raise errors.UserError(f"config.{field} must be >= 1, got {value}")
  if config.num_train_steps < 0 or (
      purpose == "train" and config.num_train_steps == 0):
    raise errors.UserError(
        f"config.num_train_steps={config.num_train_steps}: "
        + ("nothing to train, so nothing would be saved or evaluated; set it "
           "> 0 (to evaluate weights, use --config.mode=eval with "
           "--config.init_from=<weights>)" if config.num_train_steps == 0
           else "it must be >= 0"))
  cfg = input_config.InputConfig.from_config(config)
  layout = input_config.ExampleLayout.from_config(config)
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  eval_bucketed = input_pipeline.eval_at_buckets(cfg, tta.is_identity)
  if evaluates and not eval_bucketed and input_pipeline.eval_at_buckets(
      cfg, tta_identity=True):
    logging.info("Test-time augmentation moves and resamples the padded "
                 "margin of a bucket: evaluating at native sizes, one image "
                 "per host.")
  # (A dry run checks the batches per chip of the topology it compiles for,
  # not per process of this machine.)
  if purpose == "train":
    input_pipeline.check_train_batches(cfg, process_count)
  if evaluates and purpose != "dry_run":  # Before step 1, not at the
    # first evaluation.
    input_pipeline.check_eval_batches(cfg, process_count, eval_bucketed)
  splits = ()
  if dataset is not None and dataset.builder.is_prepared():
    splits = tuple(dataset.builder.info.splits.keys())
    wanted = ([cfg.train_split] if purpose != "eval" else []) + (
        [cfg.eval_split] if evaluates else [])
    for split in wanted:
      if split not in splits:
        field = ("train_split" if split == cfg.train_split and
                 purpose != "eval" else "eval_split")
        raise errors.UserError(
            f"config.dataset.{field}={split!r}: {config.dataset.name} has "
            f"no such split; it has {sorted(splits)}")
  class_names = (_dataset_class_names(config, spec, layout, metadata,
                                      loaded) if dataset is not None else None)
  exclusions = ()
  if "eval" in config and "exclude_classes" in config.eval:
    exclusions = tuple(str(name) for name in config.eval.exclude_classes)
  # Before training, not at its first evaluation; by name, so only where the
  # dataset's names are known (a dry run opens no dataset).
  if exclusions and class_names is not None:
    classes = spec.head_classes if spec.multi_head else {
        models.SINGLE_OUTPUT: spec.num_classes}
    names = class_names if spec.multi_head else {
        models.SINGLE_OUTPUT: class_names}
    metrics_lib.excluded_classes(
        exclusions, metrics_lib.head_class_names(classes, names or {}))
  sources = {}
  if purpose == "train":
    sources = init_sources(config.init_from, spec)
    for path in sources.values():
      # Before any work: a wrong path fails at once.
      check_local_path(path, "config.init_from")
      _check_init_width(checkpointing.existing_source(path), path, spec)
    # Last: it reads the splits' records.
    input_pipeline.check_image_sizes(cfg, dataset, evaluate=evaluates)
  recorded = json.loads(config.to_json_best_effort())
  for field in MACHINE_LOCAL_FIELDS:
    recorded.pop(field, None)
  config.lock()
  return Run(config=config, purpose=purpose, spec=spec, dataset=dataset,
             class_names=class_names, splits=splits, input=cfg,
             layout=layout, tta=tta, exclusions=exclusions,
             init_sources=sources, train_bucketed=cfg.train_buckets,
             eval_bucketed=eval_bucketed, evaluates=evaluates,
             recorded=json.dumps(recorded))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks ``config`` as :func:`resolve` does for a dry run, and settles
  ``config.model.num_classes`` in place (for the dry run, until it takes the
  :class:`Run`)."""
  config.model.num_classes = resolve(config, "dry_run").spec.num_classes


def get_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field (``"optim.base_lr"``)."""
  for part in field.split("."):
    config = config[part]
  return config


def set_field(config: ml_collections.ConfigDict, field: str,
              value: Any) -> None:
  """Sets a dotted field (``"tta.scales"``)."""
  *groups, name = field.split(".")
  for part in groups:
    config = config[part]
  setattr(config, name, value)


def _init_metadata(path: str) -> Mapping[str, Any] | None:
  """The recorded model of ``config.init_from`` (a weights export or a
  training workdir's ``config.json``), read cheaply; None if unknown."""
  try:
    if checkpointing.is_weights_export(path):
      return checkpointing.load_metadata(path)
    run_file = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(run_file):
      with open(run_file) as f:
        return json.load(f)
  except (OSError, ValueError):
    pass  # Reported, with its reason, when the weights are read.
  return None


def _check_init_width(path: str, given: str, spec: models.ModelSpec) -> None:
  """Refuses weights of another width before anything is written, naming
  the flag that fits them."""
  metadata = _init_metadata(path)
  if not isinstance(metadata, Mapping):
    return
  options = metadata.get("model_options") or {}
  saved = int(options.get("width_divisor", 1))
  if saved != spec.width_divisor:
    raise errors.UserError(
        f"config.init_from={given} holds weights of width_divisor={saved}, "
        f"but config.model.width_divisor={spec.width_divisor}: pass "
        f"--config.model.width_divisor={saved} (or convert the weights "
        f"again with --width_divisor {spec.width_divisor})")


def warn_if_scratch_with_caffe_inputs(
    config: ml_collections.ConfigDict,
    preprocessing: preprocessing_lib.Preprocessing) -> None:
  """Warns when a net starts from scratch on 0-255 inputs (Caffe's
  preprocessing, made for the pretrained VGG16): its first losses are far
  above ln(classes) and it may diverge. Only a warning: the reference
  configs keep their preprocessing unless the config says otherwise."""
  if config.init_from or not (
      preprocessing.scale == 1.0
      and all(float(s) == 1.0 for s in preprocessing.std)):
    return
  logging.warning(
      "Training from scratch with the %s preprocessing (inputs in 0..255, "
      "made for pretrained VGG16 weights): expect first losses far above "
      "ln(classes) and a slow start. From scratch, --config.preprocessing="
      "torchvision (inputs near -2..2) suits the he_normal init, as "
      "configs/quickstart.py and configs/folder_quickstart.py do.",
      preprocessing.name)


# The optimizer's rates and factors: finite and >= 0.
_NON_NEGATIVE_OPTIM = ("base_lr", "momentum", "weight_decay", "bias_lr_mult",
                       "bias_decay_mult", "end_lr_factor")


def _validate_optim(optim: ml_collections.ConfigDict,
                    num_classes: int | None = None) -> None:
  """Checks ``config.optim``: every value the optimizer
  (:mod:`fcn_jax.training.optim`) and the loss read (``class_weights``
  against ``num_classes`` when given).

  Raises:
    errors.UserError: naming the field, the value and what is allowed.
  """
  # A rate of nan or inf would run steps before the divergence message; a
  # negative one would climb the loss: refused before step 1.
  for field in _NON_NEGATIVE_OPTIM:
    value = float(optim[field])
    if not math.isfinite(value) or value < 0:
      raise errors.UserError(
          f"config.optim.{field} must be a finite number >= 0, got {value}"
          + (" (the reference's is 1e-10 for FCN-32s with the summed loss, "
             "~1e-4 with loss_normalization='valid')"
             if field == "base_lr" else ""))
  if optim.schedule not in default_config.SCHEDULES:
    raise errors.UserError(f"config.optim.schedule must be one of "
                     f"{default_config.SCHEDULES}, got {optim.schedule!r}")
  losses.check_normalization(optim.loss_normalization)
  if not 0.0 < optim.loss_sampling_p <= 1.0:
    raise errors.UserError(f"config.optim.loss_sampling_p must be in (0, 1], got "
                     f"{optim.loss_sampling_p}")
  if optim.get("trainable", "all") not in default_config.TRAINABLE:
    raise errors.UserError(f"config.optim.trainable must be one of "
                     f"{default_config.TRAINABLE}, got {optim.trainable!r}")
  if optim.iter_size < 1:
    raise errors.UserError(f"config.optim.iter_size must be >= 1, got "
                     f"{optim.iter_size}")
  class_weights = tuple(optim.class_weights)
  if (class_weights and num_classes is not None
      and len(class_weights) != num_classes):
    raise errors.UserError(f"config.optim.class_weights has {len(class_weights)} "
                     f"values for {num_classes} classes")


def model_spec(config: ml_collections.ConfigDict) -> models.ModelSpec:
  """The model ``config.model`` describes (checked)."""
  return models.ModelSpec.from_dict(config.model.to_dict())


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
      raise errors.UserError(
          f"config.init_from={init_from!r}: give one path, or one "
          f"STREAM=PATH per stream of {spec.name} (streams: "
          f"{suffixes or 'none, it has one trunk'}), separated by commas")
    sources[suffix] = path
  return sources


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


def _dataset_class_names(config: ml_collections.ConfigDict,
                         spec: models.ModelSpec,
                         layout: input_config.ExampleLayout,
                         metadata: Mapping[str, Any] | None,
                         loaded: checkpointing.LoadedModel | None) -> Any:
  """The dataset's class names, checked against the model's class count
  (each head's against its label feature's for a multi-head net).

  Returns:
    The names (``{head: names}`` for a multi-head net), or None if the
    dataset records none.

  Raises:
    errors.UserError: The counts differ; the message gives the fix.
  """
  where = "config.model" if loaded is None else f"the model in {loaded.path}"
  if spec.multi_head:
    names = {}
    for head, feature in layout.labels:
      head_names = datasets.label_class_names(metadata, feature)
      if head_names is None:
        return None
      wanted = spec.head_classes[head]
      if len(head_names) != wanted:
        raise errors.UserError(
            f"{where}: the {head} head of {spec.name} has {wanted} classes, "
            f"but {feature} of the dataset {config.dataset.name} has "
            f"{len(head_names)}: check config.dataset.label_features and "
            "config.model.num_classes.")
      names[head] = head_names
    return names
  classes = datasets.dataset_classes(metadata)
  names = None if classes is None else classes[1]
  num_classes = spec.num_classes
  if names is None or len(names) == num_classes:
    return names
  if loaded is None:
    model = f"config.model.num_classes={num_classes}"
    fix = (f"Set --config.model.num_classes={len(names)} (init_from weights "
           "of another class count keep their trunk; their score layers "
           "start afresh)")
  else:
    model = f"{where} has num_classes={num_classes}"
    fix = "Evaluate it on the dataset it was trained on"
  effect = (f"its labels {num_classes}..{len(names) - 1} would be ignored"
            if num_classes < len(names) else
            f"classes {len(names)}..{num_classes - 1} would never be seen")
  raise errors.UserError(f"{model}, but the dataset {config.dataset.name} "
                         f"has {len(names)} classes: {effect}. {fix}.")


def check_same_model(requested: models.ModelSpec,
                     metadata: Mapping[str, Any], where: str) -> None:
  """Checks that ``requested`` (a run's model) is the model a checkpoint
  was trained with.

  Raises:
    ValueError: They differ; the message names the fields and the fixes.
    checkpointing.DamagedCheckpointError: The metadata describes no model.
  """
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
    raise errors.UserError(
        f"cannot resume {where} with another model: config.model."
        f"{', config.model.'.join(differ)}. Rerun with the model it was "
        f"trained with (see {os.path.join(workdir, CONFIG_FILE)}), or train in "
        f"a new --workdir (with --config.init_from={workdir} to start from "
        "its weights).")


def run_workdir(source: str) -> str | None:
  """The training workdir that holds ``source`` (a workdir, its
  ``checkpoints/`` or one of its step directories) if it has its run's
  ``config.json``; None otherwise (e.g. a weights export)."""
  path = os.path.abspath(os.path.expanduser(source))
  for candidate in (path, os.path.dirname(path),
                    os.path.dirname(os.path.dirname(path))):
    if (os.path.isfile(os.path.join(candidate, CONFIG_FILE)) and os.path.isdir(
        os.path.join(candidate, checkpointing.CHECKPOINT_DIR))):
      return candidate
  return None


def _merge_saved(base: ml_collections.ConfigDict,
                 saved: Mapping[str, Any]) -> None:
  """Sets ``base``'s fields from a saved config (JSON: tuples came back as
  lists); fields this fcn_jax does not know are left out."""
  for key, value in saved.items():
    if key not in base:
      continue
    current = base[key]
    if isinstance(current, ml_collections.ConfigDict):
      if isinstance(value, Mapping):
        if current.keys():
          _merge_saved(current, value)
        else:  # A free-form group (dataset.label_features).
          base[key] = ml_collections.ConfigDict(dict(value))
    elif isinstance(current, tuple) and isinstance(value, list):
      base[key] = tuple(value)
    else:
      base[key] = value


def saved_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run recorded in ``WORKDIR/config.json`` (its
  dataset, data dir, input, evaluation batch and TTA), on top of
  :mod:`fcn_jax.default_config` for fields it does not record.

  Raises:
    ValueError: The file is unreadable or records no config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      saved = json.load(f)["config"]
    if isinstance(saved, str):
      saved = json.loads(saved)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UserError(f"{path} records no run config ({type(e).__name__}); "
                     "give the config with --config FILE") from None
  config = default_config.get_config()
  _merge_saved(config, saved)
  return config


def check_local_path(path: str, what: str) -> None:
  """Rejects URLs (``gs://...``): the workdir and weights use file APIs.

  Raises:
    ValueError: ``path`` is a URL; the message says how to mount the bucket.
  """
  if "://" in path:
    raise errors.UserError(
        f"{what}={path}: fcn_jax reads and writes workdirs and weights through "
        "the file system, not URLs. Mount the bucket (e.g. gcsfuse "
        "--implicit-dirs --rename-dir-limit=100000 BUCKET /gcs/BUCKET, as "
        "launch/tpu_run.sh does with GCS_BUCKET=...) and pass /gcs/BUCKET/...")
