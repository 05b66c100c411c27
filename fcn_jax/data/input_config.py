"""The config fields the input pipeline reads, validated once.

:class:`InputConfig` is the schema; the field table, with what each field
means, is in the :mod:`fcn_jax.data.input_pipeline` docstring.
:class:`ExampleLayout` says which dataset features make each model input and
each head's labels (from ``config.model.name`` and
``config.dataset.label_features``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from fcn_jax import errors
from fcn_jax.data import buckets as buckets_lib

TRAIN_MODES = ("reference", "epochs")

# The dataset features of every builder (fcn_jax.datasets.common).
DEFAULT_LABEL_FEATURE = "segmentation_mask"
IMAGE_FEATURE = "image"
# The key of a single-head net's labels (fcn_jax.models.SINGLE_OUTPUT).
SINGLE_HEAD = "score"


@dataclasses.dataclass(frozen=True)
class ExampleLayout:
  """Which dataset features make an example's inputs and labels.

  The default (one colour ``image`` input, one head on
  ``segmentation_mask``) is every VOC-style net: its batches hold plain
  arrays. A multi-input net's batch ``image`` is a dict keyed by input name,
  a multi-head net's ``label`` a dict keyed by head name
  (:class:`fcn_jax.models.ModelSpec`).

  Attributes:
    inputs: ``(input name, dataset features concatenated along channels,
      channels)`` per model input (``ModelSpec.input_sources``).
    labels: ``(head name, dataset label feature)`` per head.
    multi_input: Whether a batch's ``image`` is a dict.
    multi_head: Whether a batch's ``label`` is a dict.
  """

  inputs: tuple[tuple[str, tuple[str, ...], int], ...] = (
      (IMAGE_FEATURE, (IMAGE_FEATURE,), 3),)
  labels: tuple[tuple[str, str], ...] = ((SINGLE_HEAD,
                                          DEFAULT_LABEL_FEATURE),)
  multi_input: bool = False
  multi_head: bool = False

  @property
  def source_features(self) -> tuple[str, ...]:
    """Every input feature read, each once, in first-use order."""
    return tuple(dict.fromkeys(f for _, features, _ in self.inputs
                               for f in features))

  @property
  def features(self) -> tuple[str, ...]:
    """Every feature an example needs (inputs, then labels)."""
    return self.source_features + tuple(dict.fromkeys(
        f for _, f in self.labels))

  def pack_inputs(self, arrays: dict[str, Any]) -> Any:
    """``{input name: array}`` as a batch's ``image`` (one array or a dict)."""
    return arrays if self.multi_input else arrays[self.inputs[0][0]]

  def pack_labels(self, arrays: dict[str, Any]) -> Any:
    """``{head: array}`` as a batch's ``label`` (one array or a dict)."""
    return arrays if self.multi_head else arrays[self.labels[0][0]]

  def check_features(self, available: Any, description: str,
                     model_name: str = "the model") -> None:
    """Raises unless every feature is among ``available`` (a split's keys).

    Raises:
      errors.UserError: Naming the missing features, the split and the fix.
    """
    missing = [f for f in self.features if f not in available]
    if missing:
      raise errors.UserError(
          f"{model_name} reads the feature(s) {missing}, which {description} "
          f"does not have (it has {sorted(available)}): train it on a dataset "
          "that has them (e.g. nyud for hha/depth), or set "
          "config.dataset.label_features to the label feature of each head.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ExampleLayout":
    """The layout of ``config.model.name`` and ``config.dataset.label_features``.

    ``label_features`` maps each head to its dataset feature (SIFT Flow's
    ``{'sem': 'semantic_mask', 'geo': 'geometric_mask'}``); empty (or
    absent) means ``segmentation_mask`` for a single-head net, whose one
    entry may also be given as ``score``. A config without ``model`` (tests
    of the pipeline alone) gets the default layout.

    Raises:
      errors.UserError: The heads of ``label_features`` are not the net's.
    """
    label_features = {}
    if "dataset" in config and "label_features" in config.dataset:
      label_features = dict(config.dataset.label_features or {})
    name = config.model.name if "model" in config else ""
    if not name:
      net_inputs, heads = cls().inputs, [SINGLE_HEAD]
      multi_input = multi_head = False
    else:
      # pylint: disable-next=g-import-not-at-top
      from fcn_jax.models import nets
      if name not in nets.NETS:
        raise errors.UserError(f"config.model.name must be one of "
                               f"{nets.MODEL_NAMES}, got {name!r}")
      net = nets.NETS[name]
      net_inputs = tuple((i.name, tuple(i.sources), i.channels)
                         for i in net.inputs)
      heads = [o.name for o in net.outputs]
      multi_input, multi_head = net.multi_input, net.multi_head
    if not multi_head:
      unknown = sorted(set(label_features) - {SINGLE_HEAD})
      labels = ((heads[0], label_features.get(SINGLE_HEAD,
                                              DEFAULT_LABEL_FEATURE)),)
    else:
      unknown = sorted(set(label_features) - set(heads))
      absent = [h for h in heads if h not in label_features]
      if absent:
        raise errors.UserError(
            f"config.dataset.label_features has no dataset feature for the "
            f"head(s) {absent} of {name}: give one per head, e.g. "
            "{'sem': 'semantic_mask', 'geo': 'geometric_mask'} for SIFT Flow "
            f"(got {label_features}).")
      labels = tuple((h, str(label_features[h])) for h in heads)
    if unknown:
      raise errors.UserError(
          f"config.dataset.label_features names {unknown}, which are not "
          f"heads of {name or 'the model'} (heads: "
          f"{heads if multi_head else [SINGLE_HEAD]}).")
    return cls(net_inputs, labels, multi_input, multi_head)


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The validated fields (the table is in :mod:`fcn_jax.data.input_pipeline`)."""

  dataset_name: str
  data_dir: str
  train_split: str
  eval_split: str
  batch_size: int
  eval_batch_size: int
  seed: int
  train_mode: str
  crop_size: int
  random_mirror: bool
  scale_range: tuple[float, float]
  eval_pad_size: int
  num_workers: int
  sampling_seed: int
  prefetch_buffer_size: int
  buckets: Any = "none"
  max_buckets: int = 4

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "InputConfig":
    """Reads and checks the fields; errors name the field and the fix.

    Args:
      config: The run config.

    Returns:
      The fields, converted to their types.

    Raises:
      errors.UserError: A field is missing or out of range.
    """

    def get(path: str, default: Any = dataclasses.MISSING) -> Any:
      node = config
      for part in path.split("."):
        if part not in node:
          if default is dataclasses.MISSING:
            raise errors.UserError(
                f"config.{path} is missing; the input pipeline needs it (see "
                "the fcn_jax.data.input_pipeline docstring for every field).")
          return default
        node = node[part]
      return node

    scale_range = tuple(float(s) for s in get("input.scale_range"))
    out = cls(
        dataset_name=str(get("dataset.name")),
        data_dir=str(get("dataset.data_dir", "") or ""),
        train_split=str(get("dataset.train_split")),
        eval_split=str(get("dataset.eval_split")),
        batch_size=int(get("batch_size")),
        eval_batch_size=int(get("eval_batch_size")),
        seed=int(get("seed")),
        train_mode=str(get("input.train_mode")),
        crop_size=int(get("input.crop_size")),
        random_mirror=bool(get("input.random_mirror")),
        scale_range=scale_range,  # pytype: disable=wrong-arg-types
        eval_pad_size=int(get("input.eval_pad_size")),
        num_workers=int(get("input.num_workers")),
        sampling_seed=int(get("input.sampling_seed")),
        prefetch_buffer_size=int(get("input.prefetch_buffer_size", 2)),
        # Configs without the field keep the per-shape path.
        buckets=buckets_lib.parse(get("input.buckets", buckets_lib.NONE)),
        max_buckets=int(get("input.max_buckets",
                            buckets_lib.DEFAULT_MAX_BUCKETS)),
    )
    if out.train_mode not in TRAIN_MODES:
      raise errors.UserError(
          f"config.input.train_mode must be one of {TRAIN_MODES}, got "
          f"{out.train_mode!r}.")
    if (len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]):
      raise errors.UserError(
          "config.input.scale_range must be (min, max) with 0 < min <= max, "
          f"got {get('input.scale_range')!r}.")
    for name in ("crop_size", "eval_pad_size", "num_workers"):
      if getattr(out, name) < 0:
        raise errors.UserError(f"config.input.{name} must be >= 0, got "
                               f"{getattr(out, name)}.")
    if out.max_buckets < 1:
      raise errors.UserError("config.input.max_buckets must be >= 1, got "
                             f"{out.max_buckets}.")
    if out.prefetch_buffer_size < 1:
      raise errors.UserError("config.input.prefetch_buffer_size must be >= 1, "
                             f"got {out.prefetch_buffer_size}.")
    return out

  @property
  def train_buckets(self) -> bool:
    """Whether training runs at buckets: native sizes (``crop_size`` 0),
    not rescaled (sizes known from the split), ``buckets`` not ``none``."""
    return (self.crop_size == 0 and self.scale_range == (1.0, 1.0)
            and self.buckets != buckets_lib.NONE)

  @property
  def augments(self) -> bool:
    """Whether training mirrors or rescales (``train_mode='epochs'`` only)."""
    return self.random_mirror or self.scale_range != (1.0, 1.0)
