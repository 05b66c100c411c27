"""INTERIM stand-ins for fcn_jax.weights until the weights branch lands.

TODO(train): delete this file once fcn_jax/weights.py is in main.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fcn_jax import preprocessing as preprocessing_lib


def copy_by_name(source: Mapping[str, Any], target: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
  params = {k: dict(v) for k, v in target.items()}
  copied, missing = [], []
  for layer, leaves in target.items():
    if layer not in source:
      missing.append(layer)
      continue
    for name, value in leaves.items():
      src = np.asarray(source[layer][name])
      if src.shape != tuple(value.shape):
        raise ValueError(f"{layer}/{name}: shape {src.shape} != {value.shape}")
      params[layer][name] = src
    copied.append(layer)
  return params, {"copied": copied, "kept": missing,
                  "unused": sorted(set(source) - set(target))}


def resolve_preprocessing(requested, stored, force):
  stored = (preprocessing_lib.Preprocessing.from_dict(stored)
            if isinstance(stored, Mapping) else stored)
  if not requested:
    return stored or preprocessing_lib.CAFFE_VGG
  chosen = preprocessing_lib.get_preprocessing(requested)
  if stored is not None and not chosen.matches(stored) and not force:
    raise ValueError(f"preprocessing {requested} differs from the weights'")
  return chosen
