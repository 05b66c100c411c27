"""The one description of a model (:class:`ModelSpec`) and building it.

``ModelSpec`` is what :func:`create_model` takes, what ``config.model`` holds
(the defaults in ``fcn_jax/default_config.py`` are this class's), what
checkpoint metadata records (:func:`fcn_jax.checkpointing.make_metadata`) and
what loading a checkpoint rebuilds. Every value is checked here, once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors
from fcn_jax.models import fcn
from fcn_jax.models import nets
from fcn_jax.models import trunks

UPSAMPLE_MODES = ("dense", "depthwise")
DTYPES = ("float32", "bfloat16", "float16")


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The one description of a model.

  Attributes:
    name: The reference net (:data:`fcn_jax.models.MODEL_NAMES`).
    num_classes: Classes of the (first) output: 21 VOC, 40 NYUD, 60
      PASCAL-Context, 33 SIFT Flow's ``sem`` (its ``geo`` head has 3). None:
      the net's reference count.
    width_divisor: Divides every trunk width (64 ... 512) and the fc width
      (4096); 1 is the real net. Larger values give tiny models for tests.
    dtype: Computation dtype (``"float32"``, ``"bfloat16"`` or
      ``"float16"``); parameters and logits stay float32. A compute choice: it
      does not shape the parameters, so checkpoints do not record it.
    learn_upsampling: Train the 2x upsamplers (the CVPR variant); the final
      upsampler stays fixed.
    dropout_rate: Inverted dropout after fc6 and fc7, in training only.
    upsample_mode: ``"dense"`` (Caffe's ``(k, k, C, C)`` upsampler kernels)
      or ``"depthwise"`` (only their diagonal, ``(k, k, 1, C)``).
  """
  name: str = "fcn32s"
  num_classes: int | None = None
  width_divisor: int = 1
  dtype: str = "float32"
  learn_upsampling: bool = False
  dropout_rate: float = trunks.DROPOUT_RATE
  upsample_mode: str = "dense"

  def __post_init__(self):
    dtype = self.dtype
    if not isinstance(dtype, str):  # A NumPy/JAX dtype or scalar type.
      try:
        dtype = jnp.dtype(dtype).name
      except TypeError:
        dtype = str(dtype)
      object.__setattr__(self, "dtype", dtype)
    if self.num_classes is None and self.name in nets.NETS:
      object.__setattr__(self, "num_classes", self.net.num_classes)
    checks = (
        ("name", self.name in nets.NETS, f"one of {nets.MODEL_NAMES}"),
        ("num_classes", _is_int(self.num_classes) and self.num_classes >= 1,
         "a positive integer"),
        ("width_divisor",
         _is_int(self.width_divisor) and self.width_divisor >= 1,
         "a positive integer"),
        ("dtype", dtype in DTYPES, f"one of {DTYPES}"),
        ("learn_upsampling", isinstance(self.learn_upsampling, bool),
         "True or False"),
        ("dropout_rate", isinstance(self.dropout_rate, (int, float))
         and 0.0 <= self.dropout_rate < 1.0, "in [0, 1)"),
        ("upsample_mode", self.upsample_mode in UPSAMPLE_MODES,
         f"one of {UPSAMPLE_MODES}"),
    )
    for field, ok, wanted in checks:
      if not ok:
        raise errors.UserError(f"config.model.{field} must be {wanted}, got "
                               f"{getattr(self, field)!r}")

  @property
  def net(self) -> nets.Net:
    """The reference net this spec builds."""
    return nets.NETS[self.name]

  @property
  def input_channels(self) -> dict[str, int]:
    """Channels of each input by name; a batch's ``image`` is a dict with
    these keys when :attr:`multi_input`, else one array."""
    return {i.name: i.channels for i in self.net.inputs}

  @property
  def input_sources(self) -> dict[str, tuple[str, ...]]:
    """The dataset features each input concatenates (``image``, ``hha``,
    ``depth``), by input name."""
    return {i.name: i.sources for i in self.net.inputs}

  @property
  def head_classes(self) -> dict[str, int]:
    """Classes of each output by name; a batch's ``label`` (and the logits)
    is a dict with these keys when :attr:`multi_head`, else one array."""
    return self.net.output_classes(self.num_classes)

  @property
  def multi_input(self) -> bool:
    return self.net.multi_input

  @property
  def multi_head(self) -> bool:
    return self.net.multi_head

  @classmethod
  def fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any], **overrides: Any
                ) -> "ModelSpec":
    """A spec from a mapping (``config.model``, metadata), checked.

    Raises:
      errors.UserError: An unknown field (naming it and the known ones) or a bad
        value.
    """
    values = {**dict(values), **overrides}
    unknown = sorted(set(values) - set(cls.fields()))
    if unknown:
      raise errors.UserError(
          f"unknown model option(s) {unknown}; the model options (the "
          f"fields of config.model) are {list(cls.fields())}")
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def shape_options(self) -> dict[str, Any]:
    """The options besides name and class count that differ from the defaults
    and are not compute-only: what a checkpoint must record to rebuild the
    model its parameters belong to."""
    default = ModelSpec()
    return {k: v for k, v in self.to_dict().items()
            if k not in ("name", "num_classes", "dtype")
            and v != getattr(default, k)}

  def replace(self, **changes: Any) -> "ModelSpec":
    return dataclasses.replace(self, **changes)

  def create(self) -> fcn.FCN:
    """The unbound :class:`~fcn_jax.models.fcn.FCN` this spec describes."""
    return fcn.FCN(net=self.net, num_classes=self.num_classes,
                   width_divisor=self.width_divisor,
                   dtype=jnp.dtype(self.dtype),
                   learn_upsampling=self.learn_upsampling,
                   dropout_rate=float(self.dropout_rate),
                   upsample_mode=self.upsample_mode)


def create_model(name: str, num_classes: int | None = None,
                 **options: Any) -> fcn.FCN:
  """Builds one of the reference nets by its name.

  Args:
    name: One of :data:`fcn_jax.models.MODEL_NAMES` (``fcn32s`` ...
      ``fcn8s_atonce``, ``fcn_alexnet``, ``nyud_fcn32s_color`` ...,
      ``siftflow_fcn8s``, ``pascalcontext_fcn8s``).
    num_classes: Classes of the (first) output; None: the net's reference
      count (21 VOC, 40 NYUD, 33 SIFT Flow ``sem``, 60 PASCAL-Context).
    **options: The other :class:`ModelSpec` fields: ``width_divisor``,
      ``dtype``, ``learn_upsampling``, ``dropout_rate``, ``upsample_mode``.

  Returns:
    An unbound :class:`~fcn_jax.models.fcn.FCN`; ``model.init(rng,
    model.dummy_inputs())`` creates its variables.

  Raises:
    errors.UserError: An unknown option or a bad value.
  """
  return ModelSpec.from_dict(options, name=name,
                             num_classes=num_classes).create()


def init_variables(model: fcn.FCN, rng: jax.Array | None = None,
                   image_size: int = 32) -> dict[str, Any]:
  """Initialises a model's variables on a small dummy input.

  The variables do not depend on the input size, so a small one keeps start-up
  cheap. Trunk weights are Flax's default init (LeCun normal); train from
  pretrained weights (see :mod:`fcn_jax.models.weights`) to reproduce the paper.
  """
  rng = jax.random.key(0) if rng is None else rng
  # One compiled program: run eagerly, init dispatches (and compiles) every
  # initializer op by op, which dominates a small model's start-up.
  return jax.jit(lambda key: model.init(key, model.dummy_inputs(image_size),
                                        train=False))(rng)


def param_shapes(model: fcn.FCN) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
  """The model's parameter shapes in forward order, without allocating them."""
  shapes = jax.eval_shape(lambda: init_variables(model))["params"]
  order = {name: i for i, name in enumerate(model.layer_names())}
  return dict(sorted(shapes.items(),
                     key=lambda kv: order.get(kv[0], len(order))))


@functools.lru_cache(maxsize=None)
def model_layer_names(name: str) -> frozenset[str]:
  """The parameterised layers of a net (independent of widths and classes)."""
  return frozenset(create_model(name, width_divisor=64).layer_names())
