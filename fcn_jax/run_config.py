"""The run config, checked and resolved: the one place that turns a config
into values (MaxText's ``pyconfig``).

Every command that reads a config goes through here: :func:`validate_config`
before any work, :func:`model_spec` for "the model of this config",
:func:`check_dataset_classes` and :func:`check_same_model` against the data and
the checkpoints, :func:`resolve_preprocessing` against the weights. The fields
and their meaning are in :mod:`fcn_jax.default_config`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping

from absl import logging
import ml_collections

from fcn_jax import checkpointing
from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax.data import data_sources
from fcn_jax.data import input_config
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.inference import tta as tta_lib
from fcn_jax.models import losses


CONFIG_FILE = "config.json"


SCRATCH_INITS = ("he_normal", "flax_default")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects inconsistent or unknown values with a message naming the field.

  Each group is checked by the module that owns it (the model by
  :class:`fcn_jax.models.ModelSpec`); this checks the optimizer and loss
  (:func:`_validate_optim`) and the run-level fields.
  """
  if config.mode not in default_config.MODES:
    raise errors.UserError(f"config.mode must be one of {default_config.MODES}, "
                     f"got {config.mode!r}")
  resolve_num_classes(config)
  spec = model_spec(config)
  _validate_optim(config.optim, spec.num_classes)
  if spec.multi_head and tuple(config.optim.class_weights):
    raise errors.UserError(f"config.optim.class_weights weighs one head's classes; "
                     f"{spec.name} has the heads {sorted(spec.head_classes)}")
  parallel.check_mode(config.parallel)
  if config.scratch_init not in SCRATCH_INITS:
    raise errors.UserError(f"config.scratch_init must be one of {SCRATCH_INITS}, "
                     f"got {config.scratch_init!r}")
  tta_from_config(config)
  for field in ("batch_size", "eval_batch_size", "log_every_steps",
                "checkpoint.every_steps"):
    value = config
    for part in field.split("."):
      value = getattr(value, part)
    if value < 1:
      raise errors.UserError(f"config.{field} must be >= 1, got {value}")
  for path in init_sources(config.init_from, spec).values():
    # Before any work: a wrong path fails at once.
    check_local_path(path, "config.init_from")
    _check_init_width(checkpointing.existing_source(path), path, spec)
  if config.num_train_steps < 0:
    raise errors.UserError(f"config.num_train_steps must be >= 0, got "
                     f"{config.num_train_steps}")


def check_dataset(config: ml_collections.ConfigDict) -> None:
  """Checks that ``config.dataset`` names a prepared dataset, before
  anything is built or written (:func:`fcn_jax.data.data_sources.check_prepared`).

  Raises:
    ValueError, FileNotFoundError: The message names the fix.
  """
  data_sources.check_prepared(config.dataset.name, config.dataset.data_dir)


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


def _validate_optim(optim: ml_collections.ConfigDict,
                    num_classes: int | None = None) -> None:
  """Checks ``config.optim``: every value the optimizer
  (:mod:`fcn_jax.training.optim`) and the loss read (``class_weights``
  against ``num_classes`` when given).

  Raises:
    ValueError: naming the field, the value and what is allowed.
  """
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


def resolve_num_classes(config: ml_collections.ConfigDict) -> None:
  """Sets ``config.model.num_classes = 0`` to the dataset's class count.

  Raises:
    ValueError: The dataset records no class count.
  """
  if config.model.num_classes:
    return
  check_dataset(config)  # A missing dataset: say so, not "no class count".
  names = data_sources.dataset_class_names(config.dataset.name,
                                           config.dataset.data_dir)
  if names is None:
    raise errors.UserError(f"config.model.num_classes=0 takes the dataset's class "
                     f"count, but {config.dataset.name} records none: set "
                     "config.model.num_classes")
  config.model.num_classes = len(names)


def model_spec(config: ml_collections.ConfigDict) -> models.ModelSpec:
  """The model ``config.model`` describes (checked)."""
  return models.ModelSpec.from_dict(config.model.to_dict())


def tta_from_config(config: ml_collections.ConfigDict
                    ) -> tta_lib.TestTimeAugmentation:
  """Evaluation's test-time augmentation, ``config.tta`` (none by default)."""
  return tta_lib.TestTimeAugmentation(bool(config.tta.flip),
                                      tuple(config.tta.scales))


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
  raise errors.UserError(f"{model}, but the dataset {config.dataset.name} has "
                   f"{len(names)} classes: {effect}. {fix}.")


def _check_head_classes(config: ml_collections.ConfigDict,
                        spec: models.ModelSpec,
                        loaded: checkpointing.LoadedModel | None
                        ) -> dict[str, list[str]] | None:
  """:func:`check_dataset_classes` for a multi-head net: each head against
  the classes of its label feature (``config.dataset.label_features``)."""
  layout = input_config.ExampleLayout.from_config(
      config if loaded is None else with_model_name(config, spec.name))
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
      raise errors.UserError(
          f"{where}: the {head} head of {spec.name} has {wanted} classes, but "
          f"{feature} of the dataset {config.dataset.name} has "
          f"{len(head_names)}: check config.dataset.label_features and "
          "config.model.num_classes.")
    names[head] = head_names
  return names


def with_model_name(config: ml_collections.ConfigDict,
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
