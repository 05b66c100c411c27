"""The config fields the input pipeline reads, validated once.

:class:`InputConfig` is the schema; the field table, with what each field
means, is in the :mod:`fcn_jax.input_pipeline` docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

TRAIN_MODES = ("reference", "epochs")


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The validated fields (the table is in :mod:`fcn_jax.input_pipeline`)."""

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

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "InputConfig":
    """Reads and checks the fields; errors name the field and the fix.

    Args:
      config: The run config.

    Returns:
      The fields, converted to their types.

    Raises:
      ValueError: A field is missing or out of range.
    """

    def get(path: str, default: Any = dataclasses.MISSING) -> Any:
      node = config
      for part in path.split("."):
        if part not in node:
          if default is dataclasses.MISSING:
            raise ValueError(
                f"config.{path} is missing; the input pipeline needs it (see "
                "the fcn_jax.input_pipeline docstring for every field).")
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
    )
    if out.train_mode not in TRAIN_MODES:
      raise ValueError(f"config.input.train_mode must be one of {TRAIN_MODES}, "
                       f"got {out.train_mode!r}.")
    if (len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]):
      raise ValueError("config.input.scale_range must be (min, max) with "
                       f"0 < min <= max, got {get('input.scale_range')!r}.")
    for name in ("crop_size", "eval_pad_size", "num_workers"):
      if getattr(out, name) < 0:
        raise ValueError(f"config.input.{name} must be >= 0, got "
                         f"{getattr(out, name)}.")
    if out.prefetch_buffer_size < 1:
      raise ValueError("config.input.prefetch_buffer_size must be >= 1.")
    return out

  @property
  def augments(self) -> bool:
    """Whether training mirrors or rescales (``train_mode='epochs'`` only)."""
    return self.random_mirror or self.scale_range != (1.0, 1.0)
