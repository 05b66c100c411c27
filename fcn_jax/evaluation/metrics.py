"""Segmentation metrics from one confusion matrix over a whole split.

As the reference ``score.py`` does (docs/reference.md §7): pixels whose label
is outside ``[0, num_classes)`` (255 = void, and padding) are dropped, a
histogram with rows = ground truth and columns = prediction is summed over
every image of the split, and the four metrics are computed once from that
total.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import errors
from fcn_jax import voc


def confusion_matrix(labels: jax.Array, predictions: jax.Array,
                     num_classes: int) -> jax.Array:
  """Counts (label, prediction) pairs over the valid pixels.

  Args:
    labels: Integer ground truth of any shape; values outside
      ``[0, num_classes)`` are ignored.
    predictions: Integer predicted classes, same shape as ``labels``.
    num_classes: Number of classes ``C``.

  Returns:
    An int32 ``[C, C]`` matrix, rows = ground truth, columns = prediction.
  """
  labels = labels.reshape(-1).astype(jnp.int32)
  predictions = predictions.reshape(-1).astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + predictions, 0)
  counts = jnp.bincount(index, weights=valid.astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def segmentation_metrics(hist: Any,
                         class_names: list[str] | None = None,
                         exclude: Sequence[int] = ()) -> dict[str, Any]:
  """The four FCN metrics and per-class IU from a summed confusion matrix.

  NaN rules follow ``score.py``: mean accuracy skips classes absent from the
  ground truth; mean IU skips classes absent from both ground truth and
  predictions (a class only predicted counts as IU 0); frequency-weighted IU
  sums over classes present in the ground truth.

  ``exclude`` leaves classes out of the class means as the paper does for
  SIFT Flow's classes absent from its test set (docs/reference.md §7): mean
  accuracy and mean IU average over the other classes, and the f.w. IU
  weighs the other classes by their share of the other classes' pixels.
  Pixel accuracy is unchanged (every pixel and prediction counts; an absent
  class has no pixels anyway), and ``per_class_iu`` still lists every class.

  Args:
    hist: ``[C, C]`` counts, rows = ground truth, columns = prediction.
    class_names: Optional names for the ``per_class_iu`` mapping.
    exclude: Class indices left out of the means.

  Returns:
    A dict with floats ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``
    (NaN when undefined, e.g. no valid pixel) and ``per_class_iu``, a list of
    C floats (NaN for undefined classes), or a name -> IU dict when
    ``class_names`` is given.
  """
  hist = np.asarray(hist, np.float64)
  if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
    raise ValueError(f"expected a square confusion matrix, got {hist.shape}")
  diag = np.diag(hist)
  gt_total = hist.sum(axis=1)
  pred_total = hist.sum(axis=0)
  total = hist.sum()
  with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)
    pixel_acc = diag.sum() / total if total > 0 else float("nan")
    class_acc = diag / gt_total
    iu = diag / (gt_total + pred_total - diag)
    kept = np.ones(len(diag), bool)
    kept[list(exclude)] = False
    kept_total = gt_total[kept].sum()
    freq = gt_total / kept_total if kept_total > 0 else np.zeros_like(
        gt_total)
    present = (freq > 0) & kept
    result = {
        "pixel_acc": float(pixel_acc),
        "mean_acc": float(np.nanmean(class_acc[kept])),
        "mean_iu": float(np.nanmean(iu[kept])),
        "fw_iu": (float((freq[present] * iu[present]).sum())
                  if present.any() else float("nan")),
    }
  per_class = [float(v) for v in iu]
  if class_names is not None:
    if len(class_names) != len(per_class):
      raise ValueError(f"{len(class_names)} class names for "
                       f"{len(per_class)} classes")
    result["per_class_iu"] = dict(zip(class_names, per_class))
  else:
    result["per_class_iu"] = per_class
  return result


def excluded_classes(exclude: Sequence[str],
                     class_names: Mapping[str, Sequence[str]]
                     ) -> dict[str, list[int]]:
  """Class indices per head for ``config.eval.exclude_classes``.

  Args:
    exclude: Class names (``"cow"``), or ``"head:name"`` for one head's.
    class_names: Each head's class names.

  Returns:
    ``{head: sorted indices}`` for every head (empty lists included).

  Raises:
    ValueError: A name that no head has, or that several heads have without
      a ``head:`` prefix.
  """
  result = {head: set() for head in class_names}
  for entry in exclude:
    head, _, name = str(entry).rpartition(":")
    heads = [head] if head else [h for h, names in class_names.items()
                                 if name in names]
    if head and head not in class_names:
      raise errors.UserError(
          f"config.eval.exclude_classes: {entry!r} names the head {head!r}; "
          f"the heads are {sorted(class_names)}")
    if not heads or name not in class_names[heads[0]]:
      raise errors.UserError(
          f"config.eval.exclude_classes: no class {name!r} in "
          + (f"head {head!r}" if head else "any head")
          + f" (classes: {[list(n) for n in class_names.values()]})")
    if len(heads) > 1:
      raise errors.UserError(
          f"config.eval.exclude_classes: {name!r} is a class of the heads "
          f"{heads}; write 'head:{name}'")
    result[heads[0]].add(list(class_names[heads[0]]).index(name))
  return {head: sorted(indices) for head, indices in result.items()}


SUMMARY_METRICS = (("pixel_acc", "pixel accuracy"),
                   ("mean_acc", "mean accuracy"), ("mean_iu", "mean IU"),
                   ("fw_iu", "f.w. IU"))


def _percent(value: Any) -> str:
  if value is None or not np.isfinite(value):
    return "   -  "
  return f"{100 * value:6.2f}"


def format_report(results: dict[str, Any],
                  class_names: list[str] | dict[str, list[str]] | None = None
                  ) -> str:
  """The four metrics and a per-class table (IU, accuracy, pixel share).

  The one text form of evaluation results: training logs it after each
  evaluation and ``python -m fcn_jax.evaluate`` prints it.

  Args:
    results: From :func:`segmentation_metrics`, with the summed
      ``confusion_matrix`` (as :func:`fcn_jax.evaluation.evaluator.evaluate` returns); the
      per-class accuracy and pixel share columns need it. Results with
      ``heads`` (a multi-head net) get one report per head.
    class_names: Row names (default: the keys of a ``per_class_iu`` dict, else
      ``class_<i>``); a dict of them keyed by head for ``heads``.

  Returns:
    Percentages, ``-`` where undefined (a class absent from both ground truth
    and predictions).
  """
  if "heads" in results:
    names = class_names if isinstance(class_names, dict) else {}
    return "\n\n".join(
        f"head {head}:\n" + format_report(head_results, names.get(head))
        for head, head_results in results["heads"].items())
  lines = [f"{label:>15}: {_percent(results.get(key))}"
           for key, label in SUMMARY_METRICS]
  per_class = results.get("per_class_iu")
  if per_class is None:
    return "\n".join(lines)
  if isinstance(per_class, dict):
    names = list(class_names or per_class)
    ius = list(per_class.values())
  else:
    ius = list(per_class)
    names = list(class_names or [f"class_{i}" for i in range(len(ius))])
  hist = results.get("confusion_matrix")
  if hist is not None:
    hist = np.asarray(hist, np.float64)
    gt_total = hist.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
      accuracy = np.diag(hist) / gt_total
    share = gt_total / max(1.0, hist.sum())
  width = max(14, max(len(n) for n in names))
  lines += ["", "per-class IU, accuracy and share of the ground-truth pixels:",
            f"{'class':<{width}} {'IU':>6} {'acc':>6} {'GT px %':>8}"]
  for k, (name, iu) in enumerate(zip(names, ius)):
    row = f"{name:<{width}} {_percent(iu)}"
    if hist is not None:
      row += f" {_percent(accuracy[k])} {100 * share[k]:8.2f}"
    lines.append(row)
  return "\n".join(lines)


def head_class_names(classes: Mapping[str, int],
                     names: Mapping[str, Sequence[str] | None]
                     ) -> dict[str, list[str]]:
  """Each head's class names: its own, else VOC's (or numbered) names for
  its class count (:func:`fcn_jax.voc.class_names`)."""
  return {h: list(names.get(h) or voc.class_names(c))
          for h, c in classes.items()}
