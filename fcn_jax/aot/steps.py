"""A config's train and eval steps, compiled for a target's devices.

The model, optimizer and train state come from training's own functions
(:func:`fcn_jax.training.loop.abstract_train_state`, as shapes), the steps
from :func:`fcn_jax.training.step.make_train_fn` and
:func:`fcn_jax.evaluation.evaluator.make_eval_fn`, fed the batches training
shards (:func:`fcn_jax.parallel.shard`'s layout) for the config's global
batches split over every device, at its training crop and evaluation size.
Native-size configs compile at their largest shape bucket: the largest of
explicit ``config.input.buckets``, else ``native_size`` (the dataset's
largest image, 500x500 for PASCAL VOC), with the images' true sizes, which
the nets mask to, where buckets apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from fcn_jax import models
from fcn_jax import run_config
from fcn_jax.aot import DryRunError
from fcn_jax.aot import search as search_lib
from fcn_jax.aot.measure import StepReport
from fcn_jax.aot.measure import compile_step
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.evaluation import evaluator
from fcn_jax.training import loop
from fcn_jax.training import step as step_lib


@dataclasses.dataclass
class Setup:
  """A resolved run's model, optimizer and abstract train state, as
  training builds them."""
  run: run_config.Run
  model: models.FCN
  tx: Any
  state: Any  # jax.ShapeDtypeStruct leaves.

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.run.config

  @property
  def spec(self) -> models.ModelSpec:
    return self.run.spec


def resolve(config: ml_collections.ConfigDict | run_config.Run,
            devices: Sequence[Any] = ()) -> run_config.Run:
  """``config`` checked as training checks it, for a dry run: no data or
  weights are read (``config.init_from`` keeps the model's own shapes);
  the batches are shared by the devices' hosts."""
  if isinstance(config, run_config.Run):
    return config
  hosts = len({d.process_index for d in devices}) or 1
  return run_config.resolve(config, "dry_run", process_count=hosts)


def setup(config: ml_collections.ConfigDict | run_config.Run) -> Setup:
  """Builds a run's state as shapes, with training's own function."""
  run = resolve(config)
  model = run.spec.create()
  state, tx = loop.abstract_train_state(run, model)
  return Setup(run, model, tx, state)


def per_chip(global_batch: int, num_chips: int, field: str) -> int:
  """Images per chip; the batch must split evenly over every chip.

  Raises:
    DryRunError: It does not; the message gives multiples that do.
  """
  if global_batch % num_chips:
    low = max(num_chips, global_batch // num_chips * num_chips)
    high = -(-global_batch // num_chips) * num_chips
    raise DryRunError(
        f"config.{field}={global_batch} does not split over the {num_chips} "
        f"chips (every chip takes the same number of images): pass "
        f"--config.{field}={low}" + (f" or {high}." if high != low else "."))
  return global_batch // num_chips


def batch_shapes(spec: models.ModelSpec, num_chips: int,
                  per_chip_batch: int, size: int | tuple[int, int],
                  with_valid: bool, with_sizes: bool = False
                  ) -> dict[str, Any]:
  """The sharded batch of a step (:func:`fcn_jax.parallel.shard` layout).

  ``image`` is one array, or a dict of the net's inputs (color, HHA, depth)
  by name; ``label`` one array, or a dict of its heads' labels by name;
  at shape buckets ``size`` holds each image's true extent.
  """
  lead = (num_chips, per_chip_batch)
  height, width = (size, size) if isinstance(size, int) else size
  images = {name: jax.ShapeDtypeStruct(lead + (height, width, channels),
                                       jnp.float32)
            for name, channels in spec.input_channels.items()}
  labels = {name: jax.ShapeDtypeStruct(lead + (height, width), jnp.int32)
            for name in spec.head_classes}
  shapes = {
      "image": images if spec.multi_input else next(iter(images.values())),
      "label": labels if spec.multi_head else next(iter(labels.values()))}
  if with_valid:
    shapes["valid"] = jax.ShapeDtypeStruct(lead, jnp.bool_)
  if with_sizes:
    shapes["size"] = jax.ShapeDtypeStruct(lead + (2,), jnp.int32)
  return shapes


def native_shape(run: run_config.Run,
                 native_size: int | str | tuple[int, int]) -> tuple[int, int]:
  """The worst-case native-size shape compiled: the largest of explicit
  ``config.input.buckets``, else ``native_size`` (with ``auto`` the largest
  bucket is the split's largest height x width: 500x500 for VOC).

  Raises:
    errors.UserError: ``native_size`` is neither one side nor ``HxW``.
  """
  if isinstance(run.input.buckets, tuple):
    return run.input.buckets[-1]
  if isinstance(native_size, tuple):
    return native_size
  return buckets_lib.parse_size(native_size, "--native_size", square=True)


def train_report(built: Setup, devices: Sequence[Any], per_chip_batch: int,
                 capacity: int, native_size: int | str) -> StepReport:
  """Compiles the train step for ``per_chip_batch`` images per chip."""
  size = built.run.input.crop_size or native_shape(built.run, native_size)
  step = step_lib.make_train_fn(built.model, built.tx, built.run, devices)
  batch = batch_shapes(built.spec, len(devices), per_chip_batch, size,
                       with_valid=False, with_sizes=built.run.train_bucketed)
  return compile_step("train", step, (built.state, batch),
                      per_chip_batch=per_chip_batch,
                      global_batch=per_chip_batch * len(devices),
                      image_size=size, capacity_bytes=capacity)


def eval_report(built: Setup, devices: Sequence[Any], capacity: int,
                native_size: int | str) -> StepReport:
  """Compiles the eval step for ``config.eval_batch_size`` over the chips."""
  cfg = built.run.input
  per_chip_batch = per_chip(cfg.eval_batch_size, len(devices),
                            "eval_batch_size")
  size = cfg.eval_pad_size or native_shape(built.run, native_size)
  step, _ = evaluator.make_eval_fn(built.model, built.run, devices=devices)
  batch = batch_shapes(built.spec, len(devices), per_chip_batch, size,
                       with_valid=True, with_sizes=built.run.eval_bucketed)
  return compile_step("eval", step, (built.state.params, batch),
                      per_chip_batch=per_chip_batch,
                      global_batch=cfg.eval_batch_size, image_size=size,
                      capacity_bytes=capacity)


def dry_run(config: ml_collections.ConfigDict | run_config.Run,
            devices: Sequence[Any], *,
            capacity: int, native_size: int | str = 500, search: bool = False,
            max_probes: int = 0,
            on_report: Callable[[StepReport], None] = lambda report: None
            ) -> dict[str, Any]:
  """Compiles a config's steps for ``devices`` and reports what they need.

  Args:
    config: A training config, or its resolved run.
    devices: Every chip of the slice.
    capacity: Memory per chip in bytes.
    native_size: The largest native image, one side or ``HxW``.
    search: Also find the largest per-chip training batch that fits.
    max_probes: Compiles the search may take (0: until exact).
    on_report: Called with each step's report as soon as it is compiled.

  Returns:
    ``train`` and ``eval`` (:class:`StepReport`), ``fits``, and with
    ``search`` ``max_per_chip_batch`` and the ``probes``.

  Raises:
    DryRunError: A batch does not split over the chips.
  """
  num_chips = len(devices)
  run = resolve(config, devices)
  per_chip_batch = per_chip(run.input.batch_size, num_chips, "batch_size")
  if not run.input.crop_size and per_chip_batch != 1 and not run.train_bucketed:
    raise DryRunError(
        f"config.input.crop_size=0 (native image size) trains one image per "
        f"chip, but config.batch_size={run.input.batch_size} gives "
        f"{per_chip_batch} per chip on {num_chips} chips: pass "
        f"--config.batch_size={num_chips} or set a crop size.")
  built = setup(run)

  def train_batch(batch: int) -> StepReport:
    report = train_report(built, devices, batch, capacity, native_size)
    on_report(report)
    return report

  train_step = train_batch(per_chip_batch)
  eval_step = eval_report(built, devices, capacity, native_size)
  on_report(eval_step)
  results = {"train": train_step, "eval": eval_step,
             "fits": train_step.fits and eval_step.fits}
  if search:
    probe = lambda b: train_step if b == per_chip_batch else train_batch(b)
    largest, probes = search_lib.find_max_batch(probe, per_chip_batch,
                                                max_probes=max_probes)
    _, first_failing = search_lib.search_bounds(probes)
    results["max_per_chip_batch"] = largest
    results["first_failing_batch"] = first_failing
    results["max_per_chip_batch_exact"] = (
        first_failing is not None and first_failing - largest == 1) or (
            largest == 0 and 1 in probes)
    results["probes"] = [probes[b] for b in sorted(probes)]
  return results
