"""Running a model exported by ``python -m fcn_jax.export``: JAX only.

::

  from fcn_jax.inference import exported
  model = exported.load("model.jaxexport")
  logits = model(images)           # uint8 [N, H, W, 3] or [H, W, 3]
  labels = model.predict(images)   # argmax: int32 [N, H, W]

(``fcn_jax.export.load`` is the same function.) Neither this module nor
``fcn_jax.inference`` imports the model code or Flax: the artifact holds the
weights, the preprocessing and the program. With JAX alone:
``jax.export.deserialize(open(path, "rb").read()).call(images)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.export  # pylint: disable=unused-import  # jax.export.* below.
import numpy as np

from fcn_jax import errors

FORMAT = "fcn_jax.export"
FORMAT_VERSION = 1


def description_path(path: str) -> str:
  """The JSON beside an artifact: ``model.jaxexport.json``."""
  return path + ".json"


class ExportedModel:
  """A loaded artifact: call it on uint8 RGB images to get logits.

  Attributes:
    description: The JSON description (classes, preprocessing, shapes).
    exported: The ``jax.export.Exported``.
  """

  def __init__(self, exported: jax.export.Exported,
               description: dict[str, Any]):
    self.exported = exported
    self.description = description

  @property
  def class_names(self) -> list[str]:
    return list(self.description.get("class_names") or [])

  def __call__(self, images: Any) -> np.ndarray:
    """Logits ``float32 [N, H, W, C]`` (``[H, W, C]`` for one image)."""
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
      images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
      raise errors.UserError(f"expected uint8 RGB images [N, H, W, 3] or "
                             f"[H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
      raise errors.UserError(f"expected uint8 pixels (0-255), got "
                             f"{images.dtype}; the preprocessing is inside "
                             "the artifact")
    expected = self.exported.in_avals[0].shape
    for axis, (got, want) in enumerate(zip(images.shape, expected)):
      if isinstance(want, int) and got != want:
        raise errors.UserError(
            f"this artifact takes images of shape {tuple(expected)}; got "
            f"{images.shape} (axis {axis}); export with that dimension "
            "'dynamic'")
    logits = np.asarray(self.exported.call(images))
    return logits[0] if single else logits

  def predict(self, images: Any) -> np.ndarray:
    """Class indices ``int32 [N, H, W]`` (``[H, W]`` for one image)."""
    return np.argmax(self(images), axis=-1).astype(np.int32)


def load(path: str) -> ExportedModel:
  """Loads an artifact written by :func:`save` (JAX only, no model code).

  Args:
    path: The ``.jaxexport`` file; its ``.json`` is read when present.

  Raises:
    errors.UserError: No such file, or not a serialized ``jax.export``
      artifact.
  """
  if not os.path.isfile(path):
    raise errors.UserError(f"no exported model at {path}")
  with open(path, "rb") as f:
    data = f.read()
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except  # flatbuffer errors.
    raise errors.UserError(f"{path} is not a serialized jax.export artifact "
                           f"({type(e).__name__}: {e})") from None
  description = {}
  if os.path.isfile(description_path(path)):
    with open(description_path(path)) as f:
      description = json.load(f)
  return ExportedModel(exported, description)
