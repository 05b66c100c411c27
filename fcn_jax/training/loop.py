"""The training loop: resume, train, evaluate, checkpoint.

``train_and_evaluate(config, workdir)`` trains a model as the config says
(docs/reference.md §5 by default), evaluating on the whole evaluation split
every ``eval_every_steps`` updates, checkpointing, and resuming from the
workdir's latest intact checkpoint when there is one. ``run`` dispatches on
``config.mode``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from fcn_jax import checkpointing
from fcn_jax import distributed
from fcn_jax import errors
from fcn_jax import logging_utils
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax.data import input_pipeline
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.evaluation import evaluator
from fcn_jax.training import interrupts
from fcn_jax.training import optim
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib
from fcn_jax.training import workdir_lock


class NonFiniteLossError(errors.DivergedError):
  """The training loss became NaN or infinite."""


class _PreemptedAtStartUp(Exception):
  """A SIGTERM or Ctrl-C arrived before the first step (nothing new to
  save)."""


def _stop_if_preempted(preemption: distributed.PreemptionWatcher,
                       ctrl_c: interrupts.CtrlC) -> None:
  """A safe point of the start-up: stops there after a SIGTERM or Ctrl-C."""
  if preemption.requested() or ctrl_c.requested():
    raise _PreemptedAtStartUp()


def _clean_up(steps: Sequence[tuple[str, Callable[[], None]]],
              error: BaseException | None) -> None:
  """Runs every clean-up step, even after one fails (the lock is released
  whatever failed before).

  With ``error`` in flight (the one the user must read: e.g. the checkpoint
  that could not be saved) a failing step, such as the metrics writer's
  close on the same full disk, is logged in one line and does not replace
  it; without one, the first failure is raised once all steps ran.
  """
  first = None
  for what, step in steps:
    try:
      step()
    except Exception as e:  # pylint: disable=broad-except  # Any clean-up.
      if error is None and first is None:
        first = e
      else:
        logging.debug("Clean-up failure:", exc_info=True)
        logging.warning("Could not %s either (%s).", what,
                        checkpointing.layout.one_line(e, 200))
  if first is not None:
    raise first


def _diverged(checkpointer: checkpointing.Checkpointer, what: str,
              unusable_step: int) -> NonFiniteLossError:
  """The error that ends a diverged run, after setting aside the checkpoint
  of ``unusable_step`` if one was saved (its state is known to be bad).

  A state is good only if it is finite and so is the loss computed from it
  (the next step's): the loss of step ``k`` is computed before step ``k``'s
  update, from the state after step ``k - 1``.
  """
  checkpointer.wait()
  aside = ""
  if unusable_step in checkpointer.all_steps():
    path = checkpointer.set_aside(unusable_step, checkpointing.DIVERGED_SUFFIX)
    aside = (f"the checkpoint of step {unusable_step}, which leads to it, is "
             f"set aside as {path}; ")
  latest = checkpointer.latest_step()
  kept = (f"the newest good checkpoint is {checkpointer.step_directory(latest)}"
          " (rerunning resumes from it)" if latest is not None else
          "no checkpoint is left (rerunning starts from the beginning)")
  return NonFiniteLossError(
      f"{what}. Stopped without saving this state; {aside}{kept}. Lower "
      "optim.base_lr (or add optim.warmup_steps), and check that it suits "
      "optim.loss_normalization (the summed loss needs a rate ~1e-10, the "
      "normalised one ~1e-4).")


def _check_finite(pending: list[tuple[int, Any]],
                  checkpointer: checkpointing.Checkpointer) -> list[float]:
  """Fetches pending step losses; raises on the first non-finite one."""
  values = [float(v) for v in jax.device_get([m["loss"] for _, m in pending])]
  for (step, _), value in zip(pending, values):
    if not np.isfinite(value):
      raise _diverged(checkpointer,
                      f"Training loss became {value} at step {step}",
                      unusable_step=step - 1)
  return values


def _check_state_finite(host_state: Mapping[str, Any], step: int,
                        checkpointer: checkpointing.Checkpointer) -> None:
  """Raises unless the parameters and optimizer state are all finite."""
  trained = {"params": host_state["params"],
             "opt_state": host_state["opt_state"]}
  bad = checkpointing.non_finite_leaves(trained)
  if bad:
    total = len(jax.tree_util.tree_leaves(trained))
    raise _diverged(
        checkpointer, f"The train state after step {step} holds NaN or "
        f"infinite values in {len(bad)} of {total} arrays ("
        f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})",
        unusable_step=step)


def _workdir_metadata(run: run_config.Run,
                      preprocessing: preprocessing_lib.Preprocessing,
                      step: int, class_names: Sequence[str] | None
                      ) -> dict[str, Any]:
  return checkpointing.make_metadata(
      run.spec, preprocessing, class_names=class_names,
      source={"format": "fcn_jax training checkpoint"}, step=int(step),
      config=run.recorded)


@dataclasses.dataclass
class _Resumed:
  step: int
  state: state_lib.TrainState
  preprocessing: preprocessing_lib.Preprocessing
  train_iter: Any


def _log_input_changes(run: run_config.Run,
                       metadata: Mapping[str, Any]) -> None:
  """Says which shape-bucket settings differ from the checkpoint's run: the
  results stay exact (buckets only pad and mask), the compiled shapes and
  the time per step change."""
  try:
    saved = metadata.get("config") or {}
    saved = json.loads(saved) if isinstance(saved, str) else saved
    saved_input = dict(saved.get("input") or {})
  except (TypeError, ValueError, AttributeError):
    return  # An older or foreign record: nothing to compare.
  changed = [f"config.input.{field}={run.config.input[field]!r} (the "
             f"checkpoint's run had {saved_input[field]!r})"
             for field in ("buckets", "max_buckets")
             if field in saved_input
             and str(saved_input[field]) != str(run.config.input[field])]
  if changed:
    logging.info("Resuming with %s: the results stay exact, only the "
                 "compiled shapes change.", ", ".join(changed))


def _resume(run: run_config.Run,
            checkpointer: checkpointing.Checkpointer,
            make_template: Callable[[], state_lib.TrainState]) -> _Resumed | None:
  """Restores the newest intact checkpoint, setting damaged ones aside.

  First the newest readable metadata is checked against the model of
  ``run`` (before anything is built or written). Then every step, newest
  first, is read in full (metadata, parameters, train state, data iterator
  position) into ``make_template()``'s structure and checked (a finite
  state); one that cannot be read is renamed ``N.corrupt`` (one with
  non-finite values ``N.diverged``), nothing deleted, once an older one has
  restored.

  Returns:
    The restored run, or None when the workdir has no checkpoint.

  Raises:
    ValueError: The config does not fit the checkpoint (another model,
      optimizer or iter_size).
    checkpointing.CheckpointError: No checkpoint can be read; nothing was
      moved.
  """
  steps = checkpointer.all_steps()
  if not steps:
    return None
  for step in reversed(steps):
    try:
      run_config.check_same_model(run.spec, checkpointer.read_metadata(step),
                                  checkpointer.step_directory(step))
      break
    except checkpointing.DamagedCheckpointError:
      continue  # Judged below.
  template = parallel.to_host(make_template().to_dict())
  iter_size = int(run.optim.iter_size)
  damaged = []
  for step in reversed(steps):
    where = checkpointer.step_directory(step)
    resumed, error, suffix = None, None, checkpointing.DAMAGED_SUFFIX
    try:
      metadata = checkpointer.read_metadata(step)
      run_config.check_same_model(run.spec, metadata, where)
      preprocessing = run_config.resolve_preprocessing(run.config, metadata)
      train_iter = input_pipeline.create_train_iterator(run, preprocessing)
      restored, _ = checkpointer.restore(step, template,
                                         data_iterator=train_iter)
      if int(restored["step"]) != step * iter_size:
        raise errors.UserError(
            f"{where} has consumed {int(restored['step'])} batches in {step} "
            f"updates, which is not optim.iter_size={iter_size} per update: "
            "resume with the iter_size it was trained with, or start a new "
            "workdir (init_from the checkpoint)")
      bad = checkpointing.non_finite_leaves(restored)
      if bad:
        suffix = checkpointing.DIVERGED_SUFFIX
        raise checkpointing.DamagedCheckpointError(
            where, f"{len(bad)} arrays hold NaN or infinite values "
            f"({', '.join(bad[:3])})")
      resumed = _Resumed(step, state_lib.TrainState.from_dict(restored),
                         preprocessing, train_iter)
      _log_input_changes(run, metadata)
    except checkpointing.DamagedCheckpointError as e:
      error = e
    if parallel.all_processes(resumed is not None):
      break
    damaged.append((step, error.reason if error else
                    "another process could not read it", suffix))
  else:
    raise checkpointing.CheckpointError(
        f"no intact checkpoint in {checkpointer.directory} ("
        + "; ".join(f"step {s}: {reason}" for s, reason, _ in damaged)
        + "); nothing was moved. Restore them from a backup, or move "
        f"{checkpointer.directory} away to train from the start.")
  for step, reason, suffix in damaged:
    path = checkpointer.set_aside(step, suffix)
    logging.warning("Checkpoint %s cannot be resumed (%s); set it aside as %s.",
                    checkpointer.step_directory(step), reason, path)
  logging.info("Resumed from %s.", checkpointer.step_directory(resumed.step))
  return resumed


def initial_rngs(run: run_config.Run) -> tuple[jax.Array, jax.Array]:
  """The keys of the parameters' initialisation and of the train state."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(run.config.seed))
  return init_rng, state_rng


def new_train_state(run: run_config.Run, model: models.FCN,
                    params: Any, state_rng: jax.Array
                    ) -> tuple[state_lib.TrainState, Any]:
  """The train state at step 0 around ``params``, and its optimizer."""
  tx = state_lib.create_optimizer(run, params, model)
  return state_lib.create_train_state(params, tx, state_rng), tx


def abstract_train_state(run: run_config.Run, model: models.FCN
                         ) -> tuple[state_lib.TrainState, Any]:
  """What :func:`train_and_evaluate` starts from, as shapes only
  (``jax.ShapeDtypeStruct`` leaves), and its optimizer: the state a
  deviceless compile (``python -m fcn_jax.dry_run``) takes. Weights from
  ``config.init_from`` are copied by name into the model's own shapes, so
  they change nothing here."""
  init_rng, state_rng = initial_rngs(run)
  params = jax.eval_shape(
      lambda: models.init_variables(model, init_rng)["params"])
  optimizer = []

  def build(p):
    state, tx = new_train_state(run, model, p, state_rng)
    optimizer.append(tx)
    return state

  return jax.eval_shape(build, params), optimizer[0]


# Timed steps after the compiled first one before the time left is logged.
_ESTIMATE_STEPS = 3


def closing_summary(workdir: str,
                    checkpointer: checkpointing.Checkpointer) -> str:
  """What a finished run says last: where its checkpoints are, the best
  step and its metrics, and the commands to run next."""
  latest = checkpointer.latest_step()
  best = checkpointer.best_step()
  metrics = checkpointer.metrics(best) if best is not None else None
  if metrics:
    best_line = (f"best step {best}: mean IU {100 * metrics['mean_iu']:.2f}%, "
                 f"pixel acc. {100 * metrics['pixel_acc']:.2f}%, mean acc. "
                 f"{100 * metrics['mean_acc']:.2f}%, f.w. IU "
                 f"{100 * metrics['fw_iu']:.2f}%")
  else:
    best_line = "no step was evaluated"
  return "\n".join([
      f"Training done: step {latest}; checkpoints in {checkpointer.directory} "
      f"({', '.join(map(str, checkpointer.all_steps()))}); {best_line}.",
      "Next:",
      f"  python -m fcn_jax.predict --checkpoint {workdir} --input "
      f"'<your photos>/*.jpg' --output {os.path.join(workdir, 'predictions')}",
      f"  python -m fcn_jax.evaluate --checkpoint {workdir}",
      f"  python -m fcn_jax.plot_metrics {workdir}",
      f"  python -m fcn_jax.export --checkpoint {workdir} --output "
      f"{os.path.join(workdir, 'model.jaxexport')}"])


def train_and_evaluate(config: ml_collections.ConfigDict | run_config.Run,
                       workdir: str) -> state_lib.TrainState:
  """Trains (and evaluates) as the config says; resumes from the workdir.

  Resuming takes the newest intact checkpoint of the workdir (see
  :func:`_resume`); the model of ``config`` must be the one it was trained
  with. A SIGTERM or a Ctrl-C, from start-up on, saves (or, before the first
  step, just stops) and returns; a second Ctrl-C exits at once
  (:mod:`fcn_jax.training.interrupts`). The training stops with
  :class:`NonFiniteLossError` when the loss or the train state is no longer
  finite; only states that are finite, and (but for the newest) whose next
  loss was, are kept.

  Args:
    config: A config from ``fcn_jax.default_config`` (see ``configs/``),
      resolved here (:func:`fcn_jax.run_config.resolve`: every check before
      anything is written), or its :class:`fcn_jax.run_config.Run`.
    workdir: Where checkpoints, metrics and TensorBoard files go.

  Returns:
    The final train state; None when a SIGTERM stopped the start-up.

  Raises:
    workdir_lock.WorkdirLockedError: Another run holds the workdir (see
      :class:`fcn_jax.training.workdir_lock.WorkdirLock`); nothing was
      written.
  """
  # Every check, before anything is written (and before step 1: not at the
  # first evaluation, after hours of training).
  run = (config if isinstance(config, run_config.Run)
         else run_config.resolve(config, "train"))
  config = run.config
  num_steps = int(config.num_train_steps)
  class_names = run.class_names
  workdir = os.path.abspath(workdir)
  is_main = parallel.is_main_process()
  evaluate_during_training = run.evaluates
  iter_size = int(config.optim.iter_size)
  # From here on a SIGTERM (a preemption) or a Ctrl-C stops the run cleanly
  # (a second Ctrl-C at once).
  checkpointer = writer = lock = error = None
  preemption = distributed.PreemptionWatcher()
  ctrl_c = interrupts.CtrlC(on_exit=lambda: lock and lock.release())
  try:
    # One writer per workdir, taken before anything is written in it.
    lock = workdir_lock.WorkdirLock(
        workdir, f"a training (config.mode={config.mode})").acquire()
    _stop_if_preempted(preemption, ctrl_c)
    model = run.spec.create()
    init_rng, state_rng = initial_rngs(run)
    checkpointer = checkpointing.Checkpointer(
        workdir, max_to_keep=config.checkpoint.max_to_keep,
        keep_best=config.checkpoint.keep_best if evaluate_during_training
        else 0)
    resuming = bool(checkpointer.all_steps())

    @functools.cache
    def initial_state():  # When resuming, only a template to restore into.
      if resuming:  # Zeros of the right shapes: nothing to compile.
        params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                              models.param_shapes(model))
        metadata = None
      else:
        params, metadata = state_lib.initial_params(
            model, init_rng, run.init_sources, config.scratch_init)
      return (*new_train_state(run, model, params, state_rng), metadata)

    _stop_if_preempted(preemption, ctrl_c)
    resumed = _resume(run, checkpointer, lambda: initial_state()[0])
    _stop_if_preempted(preemption, ctrl_c)
    state, tx, source_metadata = initial_state()
    if resumed is None:
      start_step = 0
      preprocessing = run_config.resolve_preprocessing(config, source_metadata)
      run_config.warn_if_scratch_with_caffe_inputs(config, preprocessing)
      train_iter = input_pipeline.create_train_iterator(run, preprocessing)
    else:
      start_step, state = resumed.step, resumed.state
      preprocessing, train_iter = resumed.preprocessing, resumed.train_iter
    run_metadata = _workdir_metadata(run, preprocessing, start_step,
                                     class_names)
    if is_main:
      checkpointing.write_json(os.path.join(workdir, run_config.CONFIG_FILE),
                               run_metadata)
    class_names = checkpointing.class_names(run_metadata)
    if preemption.should_stop(start_step) or ctrl_c.requested():
      raise _PreemptedAtStartUp()
    if resumed is not None and start_step >= num_steps:
      logging.warning(
          "Nothing to do: %s is at step %d and config.num_train_steps=%d; "
          "raise --config.num_train_steps to train further, or evaluate it "
          "with python -m fcn_jax.evaluate --checkpoint %s.", workdir,
          start_step, num_steps, workdir)
      return state
    logging.info("Model %s (%d classes), preprocessing %s; training steps "
                 "%d -> %d (parallel=%s).", config.model.name,
                 config.model.num_classes, preprocessing.name, start_step,
                 num_steps, config.parallel)

    train_devices = parallel.devices_for_batch(config.batch_size)
    state = parallel.replicate(state, train_devices)  # Else step 2 recompiles.
    p_train_step = step_lib.make_train_fn(model, tx, run, train_devices)
    p_eval_step, eval_devices = evaluator.make_eval_fn(model, run)
    lr_fn = optim.create_learning_rate_fn(config.optim, num_steps)
    writer = logging_utils.MetricWriter(workdir, enabled=is_main,
                                        resume_step=start_step)
    progress = logging_utils.Progress(num_steps,
                                      config.batch_size * iter_size,
                                      start_step)
    eval_every = int(config.eval_every_steps)

    pending = []  # (step, device metrics) not yet checked for finiteness.
    logging.info("Compiling the train step (this can take a minute)...")
    for step in range(start_step + 1, num_steps + 1):
      for _ in range(iter_size):
        batch = next(train_iter)
        state, step_metrics = p_train_step(
            state, parallel.shard(batch, len(train_devices),
                                 keys=step_lib.BATCH_KEYS))
        pending.append((step, step_metrics))
      is_last = step == num_steps
      preempted = preemption.should_stop(step) or ctrl_c.requested()
      do_eval = evaluate_during_training and (
          is_last or (eval_every > 0 and step % eval_every == 0))
      do_save = (is_last or do_eval or preempted
                 or step % config.checkpoint.every_steps == 0)
      do_log = is_last or step % config.log_every_steps == 0
      if step == start_step + 1:  # Exclude compilation from the rates.
        jax.block_until_ready(state)
        progress.restart(step)
      elif step == start_step + 1 + _ESTIMATE_STEPS and not is_last:
        jax.block_until_ready(state)  # The steps' time, not their dispatch.
        progress.estimate(step, _ESTIMATE_STEPS)
      if not (do_log or do_eval or do_save):
        continue
      step_losses = _check_finite(pending, checkpointer)
      if do_log:
        loss = float(np.mean(step_losses))
        scalars = {"loss": loss, "learning_rate": float(lr_fn(step - 1)),
                   "pixel_acc": float(pending[-1][1]["pixel_acc"])}
        scalars.update(progress.update(step, loss, scalars["learning_rate"]))
        writer.write_scalars(step, "train", scalars)
      pending = []
      if do_save:  # Before evaluating: a diverged state is neither.
        host_state = parallel.to_host(state.to_dict())
        _check_state_finite(host_state, step, checkpointer)
      eval_results = None
      if do_eval:
        eval_results, tiles = evaluator.evaluate(
            p_eval_step, eval_devices, state.params,
            input_pipeline.create_eval_iterator(run, preprocessing),
            num_classes=evaluator.eval_classes(run.spec), class_names=class_names,
            preprocessing=preprocessing, num_tiles=config.num_eval_tiles,
            exclude_classes=run.exclusions)
        evaluator.report_eval(writer, step, eval_results, tiles, class_names)
      if do_save:
        parallel.check_same_across_processes(host_state, "train states")
        logging.info("Saving step %d (parameters fingerprint %s).", step,
                     parallel.fingerprint(host_state["params"]))
        metadata = _workdir_metadata(run, preprocessing, step, class_names)
        if eval_results is not None:
          metadata["metrics"] = logging_utils.to_json(eval_results)
        checkpointer.save(step, host_state,
                          metadata=metadata, data_iterator=train_iter,
                          metrics=eval_results)
      if preempted:
        checkpointer.wait()
        logging.warning("%s: saved step %d; rerun the same command to resume.",
                        "Stopped by Ctrl-C" if ctrl_c.requested()
                        else "Preempted", step)
        break
    else:
      checkpointer.wait()
      if is_main and checkpointer.latest_step() is not None:
        logging.info("%s", closing_summary(workdir, checkpointer))
  except _PreemptedAtStartUp:
    logging.warning("%s during start-up: stopped before the first step, with "
                    "nothing new to save; rerun the same command to resume.",
                    "Ctrl-C" if ctrl_c.requested() else "Preempted")
    return None
  except BaseException as e:
    error = e
    raise
  finally:
    steps = []
    if checkpointer is not None:
      steps += [("finish the checkpoint writes", checkpointer.wait),
                ("close the checkpoint manager", checkpointer.close)]
    if writer is not None:
      steps.append(("close the metrics and TensorBoard writer", writer.close))
    if lock is not None:
      steps.append(("release the workdir lock", lock.release))
    # Last: a second Ctrl-C while a save finishes still exits at once.
    steps.append(("restore the signal handlers",
                  lambda: (preemption.close(), ctrl_c.close())))
    _clean_up(steps, error)
  return state


def run(config: ml_collections.ConfigDict, workdir: str,
        step: str | int = checkpointing.DEFAULT_STEP) -> Any:
  """Runs ``config.mode``: train, eval or train_and_eval.

  ``eval`` evaluates the workdir's checkpoint picked by ``step`` (else
  ``config.init_from``) and writes its report into the workdir. It writes
  there (``eval_results.json``, metrics, TensorBoard), so it takes the
  workdir's lock like a training: it is refused while a training runs on
  the workdir (``python -m fcn_jax.evaluate --output elsewhere`` reads a
  running training's checkpoints without writing into its workdir).
  """
  run_config.check_local_path(workdir, "--workdir")
  logging_utils.quiet_async_errors()
  if config.mode != "eval":
    return train_and_evaluate(config, workdir)
  workdir = os.path.abspath(workdir)
  source = workdir
  if not os.path.isdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)):
    if not config.init_from:
      raise FileNotFoundError(
          f"nothing to evaluate: {workdir} has no "
          f"{checkpointing.CHECKPOINT_DIR}/ and config.init_from is empty")
    source = config.init_from
  # Every check first: a config mistake never waits on the lock.
  run, loaded = evaluator.load_checkpoint(config, source, step)
  with workdir_lock.WorkdirLock(workdir, "an evaluation (config.mode=eval)"):
    report = evaluator.evaluate_checkpoint(
        run, loaded, output_dir=workdir, log_to_workdir=True)
  logging.info("Wrote %s.", os.path.join(workdir, evaluator.EVAL_RESULTS_FILE))
  return report
