"""Evaluation: the eval step, one pass over a split, and its reports.

:func:`evaluate` is the evaluation of training, of ``--config.mode=eval`` and
of ``python -m fcn_jax.evaluate`` (through :func:`evaluate_checkpoint`): one
confusion matrix summed over every image of every host, and from it the four
FCN metrics of :mod:`fcn_jax.evaluation.metrics`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fcn_jax import checkpointing
from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax import visualize
from fcn_jax import voc
from fcn_jax.data import batch_transforms
from fcn_jax.data import input_pipeline
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.evaluation import metrics as metrics_lib
from fcn_jax.inference import tta as tta_lib
from fcn_jax.models import losses


EVAL_RESULTS_FILE = "eval_results.json"


CONFUSION_FILE = "confusion.png"


def eval_step(params: Any, batch: Mapping[str, Any], *,
              model: models.FCN, loss_normalization: str = "sum",
              tta: tta_lib.TestTimeAugmentation = tta_lib.TestTimeAugmentation()
              ) -> tuple[dict[str, Any], Any]:
  """Scores a shard of an evaluation batch.

  Padding examples (``valid`` False) and pixels labelled outside
  ``[0, num_classes)`` (255: void and padding) never count.

  Args:
    params: Model parameters (replicated).
    batch: ``image``, ``label`` (dicts for multi-input / multi-head nets, as
      in :func:`train_step`), optionally ``valid`` bool ``[b]`` and, at shape
      buckets, ``size`` int32 ``[b, 2]`` (the true extents the net masks
      to).
    model: The FCN.
    loss_normalization: How each image's loss is normalised (``"sum"``: the
      sum over its valid pixels, as score.py reports; ``"valid"``: the mean).
      A multi-head net's image loss is the sum over its heads.
    tta: Test-time augmentation (:mod:`fcn_jax.inference.tta`; the reference used
      none, the default).

  Returns:
    ``(totals, predictions)``: totals summed over devices — the int32
    ``confusion`` matrix ``[C, C]`` (rows = ground truth), ``loss_sum`` over
    the images and ``num_images`` — and this device's argmax predictions
    ``[b, H, W]``. A multi-head net gives ``confusion`` and the predictions
    as dicts keyed by head.
  """
  classes = model.head_classes
  labels = model.per_head(batch["label"])
  image_valid = batch.get("valid")
  if image_valid is None:
    image_valid = jnp.ones(next(iter(labels.values())).shape[:1], bool)
  sizes = batch_transforms.size_kwargs(batch)
  if sizes and not tta.is_identity:
    raise errors.UserError("test-time augmentation needs native-size batches "
                     "(config.input.buckets='none')")
  logits = model.per_head(tta(
      lambda x: model.apply({"params": params}, x, train=False, **sizes),
      batch["image"]))
  predictions, confusion, per_image = {}, {}, 0.0
  for h, c in classes.items():
    head_labels = jnp.where(image_valid[:, None, None],
                            labels[h].astype(jnp.int32), voc.IGNORE_LABEL)
    predictions[h] = jnp.argmax(logits[h], axis=-1).astype(jnp.int32)
    pixel_weights = losses.pixel_weights(head_labels, c)
    head_loss = jnp.sum(pixel_weights * losses.pixel_cross_entropy(
        logits[h], head_labels), axis=(1, 2))
    if loss_normalization == "valid":
      head_loss = head_loss / jnp.maximum(jnp.sum(pixel_weights, (1, 2)),
                                          1.0)
    per_image = per_image + head_loss
    confusion[h] = metrics_lib.confusion_matrix(head_labels, predictions[h],
                                                c)
  if not model.multi_head:
    confusion = confusion[models.SINGLE_OUTPUT]
    predictions = predictions[models.SINGLE_OUTPUT]
  totals = parallel.psum({
      "confusion": confusion,
      "loss_sum": jnp.sum(jnp.where(image_valid, per_image, 0.0)),
      "num_images": jnp.sum(image_valid).astype(jnp.int32),
  })
  return totals, predictions


def make_eval_fn(model: models.FCN, run: run_config.Run,
                 devices: Sequence[jax.Device] | None = None
                 ) -> tuple[Callable[..., Any], list[jax.Device]]:
  """The data-parallel eval step and the devices it runs on.

  Args:
    model: The FCN.
    run: The resolved run: its ``eval_batch_size``,
      ``optim.loss_normalization``, test-time augmentation and
      ``parallel``.
    devices: The devices to run on; default: those
      :func:`fcn_jax.parallel.devices_for_batch` picks for
      ``eval_batch_size``.
  """
  if devices is None:
    devices = parallel.devices_for_batch(run.config.eval_batch_size,
                                         "eval_batch_size")
  step = functools.partial(eval_step, model=model,
                           loss_normalization=run.optim.loss_normalization,
                           tta=run.tta)
  return parallel.replicate_step(step, devices,
                                 per_device_outputs=(False, True),
                                 mode=run.config.parallel), devices


def evaluate(p_eval_step: Callable[..., Any], devices: Sequence[jax.Device],
             params: Any, batches: Iterable[Mapping[str, np.ndarray]], *,
             num_classes: int | Mapping[str, int],
             class_names: Sequence[str] | Mapping[str, Sequence[str]]
             | None = None,
             preprocessing: preprocessing_lib.Preprocessing | None = None,
             num_tiles: int = 0,
             exclude_classes: Sequence[str] = ()
             ) -> tuple[dict[str, Any], list[np.ndarray]]:
  """Evaluates on every batch of a split; metrics from the summed matrix.

  This is the evaluation of training, of ``--config.mode=eval`` and of
  ``python -m fcn_jax.evaluate`` (through :func:`evaluate_checkpoint`).

  Args:
    p_eval_step: From :func:`make_eval_fn`.
    devices: Its devices.
    params: The parameters to evaluate.
    batches: One pass over the split (host-local batches).
    num_classes: ``C``, or ``{head: C}`` for a multi-head net
      (:func:`eval_classes`).
    class_names: Names for ``per_class_iu`` (``{head: names}`` for a
      multi-head net).
    preprocessing: To turn inputs back into images for the tiles.
    num_tiles: How many image | label | prediction tiles to return (from the
      first valid examples of this process; the first head's).
    exclude_classes: Class names left out of the means
      (``config.eval.exclude_classes``; ``"head:name"`` for one head's, see
      :func:`fcn_jax.evaluation.metrics.excluded_classes`); they need ``class_names``.

  Returns:
    ``(metrics, tiles)``: ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``,
    ``per_class_iu``, ``loss`` (mean per image) and ``num_images``, computed
    once from the confusion matrix of the whole split over all hosts, and
    that ``confusion_matrix`` (``[C][C]`` ints, rows = ground truth). For a
    multi-head net the four metrics, ``per_class_iu`` and
    ``confusion_matrix`` are the first head's, and ``heads`` holds them for
    every head (SIFT Flow's geometric accuracy is
    ``heads["geo"]["pixel_acc"]``). A head with excluded classes lists
    their names under ``excluded_classes``.

  Raises:
    ValueError: An excluded class that is not a class of the heads.
  """
  multi_head = isinstance(num_classes, Mapping)
  classes = (dict(num_classes) if multi_head
             else {models.SINGLE_OUTPUT: num_classes})
  names = (dict(class_names) if multi_head and class_names
           else {models.SINGLE_OUTPUT: class_names})
  hist = {h: np.zeros((c, c), np.int64) for h, c in classes.items()}
  first = next(iter(classes))
  exclude = {h: [] for h in classes}
  if exclude_classes:
    exclude = metrics_lib.excluded_classes(
        exclude_classes, metrics_lib.head_class_names(classes, names))
  loss_sum, num_images = 0.0, 0
  tiles = []
  for batch in batches:
    totals, predictions = p_eval_step(
        params, parallel.shard(batch, len(devices),
                              keys=("image", "label", "valid",
                                    batch_transforms.SIZE)))
    totals = jax.device_get(totals)
    confusion = totals["confusion"] if multi_head else {
        first: totals["confusion"]}
    for h in classes:
      hist[h] += np.asarray(confusion[h], np.int64)
    loss_sum += float(totals["loss_sum"])
    num_images += int(totals["num_images"])
    if len(tiles) < num_tiles and preprocessing is not None:
      predictions = parallel.unshard(
          predictions[first] if multi_head else predictions)
      images = jax.tree.leaves(batch["image"])[0]
      labels = batch["label"][first] if multi_head else batch["label"]
      valid = np.asarray(batch.get("valid", np.ones(len(predictions), bool)))
      for i in np.flatnonzero(valid)[:num_tiles - len(tiles)]:
        tiles.append(visualize.make_tile(
            preprocessing.invert(np.asarray(images[i])[..., :3]),
            np.asarray(labels[i]), predictions[i]))
  # The step's psum spans every device of every host: the totals are global.
  heads = {}
  for h, counts in hist.items():
    heads[h] = metrics_lib.segmentation_metrics(counts, names.get(h),
                                                exclude[h])
    if exclude[h]:
      head_names = names.get(h) or voc.class_names(len(counts))
      heads[h]["excluded_classes"] = [head_names[k] for k in exclude[h]]
    heads[h]["confusion_matrix"] = counts.tolist()
  results = dict(heads[first])
  if multi_head:
    results["heads"] = heads
  results["loss"] = loss_sum / num_images if num_images else float("nan")
  results["num_images"] = int(num_images)
  return results, tiles


def eval_classes(spec: models.ModelSpec | models.FCN
                 ) -> int | dict[str, int]:
  """What :func:`evaluate` takes as ``num_classes`` for a model."""
  return spec.head_classes if spec.multi_head else spec.num_classes


def report_eval(writer: logging_utils.MetricWriter, step: int,
                 results: Mapping[str, Any], tiles: Sequence[np.ndarray],
                 class_names: Sequence[str] | Mapping[str, Sequence[str]]
                 ) -> None:
  logging.info("Evaluation at step %d on %d images:\n%s", step,
               results["num_images"],
               metrics_lib.format_report(results, class_names))
  writer.write_scalars(step, "eval", results)
  writer.write_images(step, {f"eval/tile_{i}": tile
                             for i, tile in enumerate(tiles)})
  writer.flush()


def load_checkpoint(config: ml_collections.ConfigDict, source: str,
                    step: str | int = checkpointing.DEFAULT_STEP
                    ) -> tuple[run_config.Run, checkpointing.LoadedModel]:
  """The saved model to evaluate and its resolved run: every check, before
  anything is written or locked.

  The checkpoint (step picked by :func:`fcn_jax.checkpointing.load`'s rule)
  rebuilds its own model, in ``config.model.dtype``, which replaces
  ``config.model`` (its name picks the input features and heads).

  Args:
    config: The run config (dataset, input, eval batch, tta, preprocessing).
    source: A training workdir, checkpoint directory or weights export.
    step: ``"best"`` (default), ``"latest"`` or a step number.

  Returns:
    ``(run, loaded)`` for :func:`evaluate_checkpoint`.
  """
  loaded = checkpointing.load(source, step, dtype=config.model.dtype)
  return run_config.resolve(config, "eval", loaded), loaded


def evaluate_checkpoint(run: run_config.Run,
                        loaded: checkpointing.LoadedModel, *,
                        output_dir: str | None = None,
                        log_to_workdir: bool = False,
                        progress: bool = False) -> dict[str, Any]:
  """Evaluates a saved model on ``config.dataset.eval_split``.

  The one evaluation of a saved model, run by ``--config.mode=eval`` and by
  ``python -m fcn_jax.evaluate``: its recorded preprocessing is checked
  against ``config.preprocessing``; the split is scored by :func:`evaluate`,
  as during training, with ``config.tta``.

  Args:
    run: The resolved run and the model, from :func:`load_checkpoint`.
    loaded: See ``run``.
    output_dir: Where to write ``eval_results.json`` and ``confusion.png``
      (None: nowhere).
    log_to_workdir: Also write the metrics line, scalars and tiles to
      ``output_dir``'s ``metrics.jsonl`` and TensorBoard (a training workdir).
    progress: Show a progress bar.

  Returns:
    The report written to ``eval_results.json``: ``checkpoint``, ``step``,
    ``step_reason``, ``dataset``, ``split``, ``tta``, ``class_names`` and
    ``metrics`` (the results of :func:`evaluate`).
  """
  config, tta = run.config, run.tta
  logging.info("Evaluating %s.", loaded.describe())
  preprocessing = run_config.resolve_preprocessing(config, loaded.metadata)
  p_eval_step, devices = make_eval_fn(loaded.model, run)
  batches = input_pipeline.create_eval_iterator(run, preprocessing)
  results, tiles = evaluate(
      p_eval_step, devices, loaded.params,
      logging_utils.track(batches, "batches", "evaluating", progress),
      num_classes=eval_classes(run.spec),
      class_names=loaded.class_names,
      preprocessing=preprocessing,
      num_tiles=config.num_eval_tiles if log_to_workdir else 0,
      exclude_classes=run.exclusions)
  report = {
      "checkpoint": loaded.path, "step": loaded.step,
      "step_reason": loaded.step_reason, "dataset": config.dataset.name,
      "split": config.dataset.eval_split,
      "eval_pad_size": int(config.input.eval_pad_size),
      "tta": {"flip": tta.flip, "scales": list(tta.scales)},
      "class_names": loaded.class_names, "metrics": results}
  if output_dir is not None and parallel.is_main_process():
    if log_to_workdir:
      writer = logging_utils.MetricWriter(output_dir)
      try:
        report_eval(writer, loaded.step or 0, results, tiles,
                     loaded.class_names)
      finally:
        writer.close()
    write_eval_results(output_dir, report)
  return report


def write_eval_results(output_dir: str, report: Mapping[str, Any]) -> None:
  """Writes ``eval_results.json`` (strict JSON, NaN as null) and
  ``confusion.png`` (the row-normalised confusion matrix; a multi-head net's
  first head, and ``confusion_<head>.png`` for every head)."""
  os.makedirs(output_dir, exist_ok=True)
  checkpointing.write_json(os.path.join(output_dir, EVAL_RESULTS_FILE),
                           report)
  results = report["metrics"]
  names = report.get("class_names")
  charts = {CONFUSION_FILE: (results, names)}
  if "heads" in results:
    first = next(iter(results["heads"]))
    charts = {CONFUSION_FILE: (results, (names or {}).get(first))}
    stem, ext = os.path.splitext(CONFUSION_FILE)
    for head, head_results in results["heads"].items():
      charts[f"{stem}_{head}{ext}"] = (head_results, (names or {}).get(head))
  for file_name, (head_results, head_names) in charts.items():
    hist = np.asarray(head_results["confusion_matrix"])
    title = (f"mean IU {100 * head_results['mean_iu']:.2f}%, pixel acc. "
             f"{100 * head_results['pixel_acc']:.2f}%")
    visualize.confusion_matrix_image(
        hist, head_names or voc.class_names(len(hist)), title=title).save(
            os.path.join(output_dir, file_name))
