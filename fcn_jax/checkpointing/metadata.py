"""The metadata that travels with a model's parameters, in a training
checkpoint and in a weights export alike.

It records the :class:`fcn_jax.models.ModelSpec` fields that shape the
parameters, the class names, the preprocessing the weights expect, and where
they came from; :func:`model_spec` and :func:`class_names` read it back.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from fcn_jax import errors
from fcn_jax import models
from fcn_jax import voc
from fcn_jax.checkpointing import layout
from fcn_jax.data import preprocessing as preprocessing_lib


def make_metadata(spec: models.ModelSpec,
                  preprocessing: preprocessing_lib.Preprocessing, *,
                  class_names: Sequence[str] | Mapping[str, Sequence[str]]
                  | None = None,
                  source: Mapping[str, Any] | None = None,
                  **extra: Any) -> dict[str, Any]:
  """The description that travels with a model's parameters.

  Args:
    spec: The model. Its name, class count and :meth:`ModelSpec.shape_options`
      are recorded (the compute dtype is not: it does not shape parameters).
    preprocessing: What inputs the weights expect (the colour image's; the
      HHA and depth preparations of NYUD's nets are recorded under
      ``source_preprocessing``).
    class_names: The classes' names (default: VOC's for 21 classes, else
      ``class_<i>``); for a multi-head net a dict of them keyed by head, as
      recorded.
    source: Where the parameters came from (e.g. ``{'file', 'format',
      'sha256'}`` of a converted file).
    **extra: More JSON-able entries (``report``, ``step``, ``config``, ...).

  Returns:
    A JSON-serialisable dict; :func:`model_spec` reads it back.
  """
  if spec.multi_head:
    given = dict(class_names or {})
    unknown = sorted(set(given) - set(spec.head_classes))
    if unknown:
      raise errors.UserError(
          f"class names for {unknown}, which {spec.name} does not have "
          f"(heads: {sorted(spec.head_classes)})")
    names = {h: list(given.get(h) or voc.class_names(c))
             for h, c in spec.head_classes.items()}
  else:
    names = {models.SINGLE_OUTPUT: list(class_names) if class_names
             else voc.class_names(spec.num_classes)}
  for head, head_names in names.items():
    wanted = spec.head_classes[head]
    if len(head_names) != wanted:
      raise errors.UserError(f"{len(head_names)} class names for a model of "
                             f"{wanted} classes"
                             + (f" in its {head} head" if spec.multi_head
                                else ""))
  if not spec.multi_head:
    names = names[models.SINGLE_OUTPUT]
  return {
      "format_version": layout.FORMAT_VERSION,
      "model": spec.name,
      "num_classes": int(spec.num_classes),
      "model_options": spec.shape_options(),
      "class_names": names,
      "preprocessing": preprocessing.to_dict(),
      **({"source_preprocessing": extra_sources} if (
          extra_sources := preprocessing_lib.source_preprocessing_metadata(
              [f for fs in spec.input_sources.values() for f in fs]))
         else {}),
      "source": dict(source or {}),
      **extra,
  }


def model_spec(metadata: Mapping[str, Any], **overrides: Any
               ) -> models.ModelSpec:
  """The :class:`~fcn_jax.models.ModelSpec` recorded in ``metadata``.

  Args:
    metadata: From :func:`make_metadata`.
    **overrides: Compute options to change (e.g. ``dtype``).
  """
  return models.ModelSpec.from_dict(
      metadata.get("model_options", {}), name=metadata["model"],
      num_classes=metadata["num_classes"], **overrides)


def class_names(metadata: Mapping[str, Any]
                ) -> list[str] | dict[str, list[str]]:
  """The class names recorded in ``metadata`` (older files: the VOC rule);
  a dict of them keyed by head for a multi-head net."""
  names = metadata.get("class_names")
  if isinstance(names, Mapping):
    return {head: list(v) for head, v in names.items()}
  return list(names or voc.class_names(int(metadata["num_classes"])))


