"""Helpers shared by the tests (the tiny random FCNs are in ``tiny_fcn.py``)."""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from typing import Any

import jax
import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def load_config(name: str, arg: str | None = None
                ) -> ml_collections.ConfigDict:
  """``get_config([arg])`` of ``configs/<name>.py``, loaded from its file as
  ``--config configs/<name>.py[:arg]`` loads it (not importable)."""
  path = CONFIGS / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """``config`` with dotted fields set (``{"optim.base_lr": 1e-4}``), as
  ``--config.optim.base_lr=1e-4`` sets them; returns it."""
  config.update_from_flattened_dict(overrides)
  return config


def flat_values(tree: Any, prefix: str = "") -> dict[str, Any]:
  """The leaves of nested dicts by dotted path (dict-valued fields too)."""
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(flat_values(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: tree}


def jit_apply(model: Any, variables: Any, *inputs: Any, **kwargs: Any) -> Any:
  """``model.apply(variables, *inputs, **kwargs)`` compiled as one program.

  The tests' reference forward passes: run eagerly, Flax dispatches (and
  XLA:CPU compiles) a VGG trunk op by op, tens of seconds on 2 cores for
  what compiles in a few as one program. The same computation either way.
  """
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, *inputs)


def resolved(config: ml_collections.ConfigDict) -> Any:
  """``config`` resolved as a dry run resolves it
  (:func:`fcn_jax.run_config.resolve`): checked, every value derived, and
  no dataset record read; for the tests that give the pipeline and the
  steps their own split sources and batches."""
  from fcn_jax import run_config  # pylint: disable=g-import-not-at-top
  return run_config.resolve(config, "dry_run")


def train_iterator(config: ml_collections.ConfigDict, *args, **kwargs
                   ) -> Any:
  """The training iterator of :func:`resolved` ``config`` (arguments as
  :func:`fcn_jax.data.input_pipeline.create_train_iterator`'s)."""
  from fcn_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.create_train_iterator(resolved(config), *args,
                                              **kwargs)


def eval_iterator(config: ml_collections.ConfigDict, *args, **kwargs) -> Any:
  """The evaluation pass of :func:`resolved` ``config`` (arguments as
  :func:`fcn_jax.data.input_pipeline.create_eval_iterator`'s)."""
  from fcn_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.create_eval_iterator(resolved(config), *args,
                                             **kwargs)
