r"""Compiles the real train and eval steps for a TPU pod slice, without a TPU.

  python -m fcn_jax.dry_run --config configs/voc_fcn8s_modern.py \
      --topology v5e-16 [--find_max_batch] [--config.<field>=<value> ...]

JAX compiles for a TPU topology on a machine without one ("deviceless AOT"):
``libtpu`` (``pip install -e ".[tpu]"``) describes the slice's chips and runs
the real TPU compiler. The dry run builds the model, optimizer, train state
and steps with the functions training uses
(:func:`fcn_jax.run_config.model_spec`, :func:`fcn_jax.training.state.create_optimizer`,
:func:`fcn_jax.training.state.create_train_state`, :func:`fcn_jax.training.step.make_train_fn`,
:func:`fcn_jax.evaluation.evaluator.make_eval_fn`), as
shapes only, for the config's global batches split over every chip of the
slice, at the config's training crop and evaluation size (the native-size
reference configs at their largest shape bucket: the largest of explicit
``config.input.buckets``, else ``--native_size``, the dataset's largest image,
500x500 by default for PASCAL VOC; with the images' true sizes, which the nets
mask to, when buckets apply). It compiles both steps and prints, per chip, the bytes of the
arguments, outputs (less those aliased to donated arguments), temporaries and
code, their total against the chip's HBM, the FLOPs of one step and the
compile time; it exits with status 1 when a step does not fit.
``--find_max_batch`` also finds the largest per-chip training batch that fits
(see :func:`find_max_batch`: a few compiles).

One process plays every host of a multi-host slice (its devices carry several
``process_index`` values); both ``config.parallel`` modes compile so (pmap
too). ``--topology=cpu`` compiles for this machine's CPU devices instead (no
libtpu needed; the capacity is this machine's memory, or ``--hbm_gib``),
which is how the tests run the tool.

The TPU compiler runs on one CPU core and is slow (15-20 minutes per
FCN-8s train step on a 2-core machine); ``tools/tpu_dry_run_table.py`` runs the grid of
``docs/tpu_dry_run.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from fcn_jax import cli
from fcn_jax import compilation_cache
from fcn_jax import models
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.data import input_config
from fcn_jax.evaluation import evaluator
from fcn_jax import run_config
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib

GIB = 1 << 30

config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    "topology", None,
    "TPU slice: a Cloud TPU accelerator type (v4-8, v5e-16, v5litepod-16, "
    "v5p-8, v6e-8, ...) or a libtpu topology name (v5e:4x4, v4:2x2x4, ...); "
    "'cpu' for this machine's CPU devices.")
_FIND_MAX_BATCH = flags.DEFINE_bool(
    "find_max_batch", False,
    "Also find the largest per-chip training batch that fits (one train-step "
    "compile per probe).")
_MAX_PROBES = flags.DEFINE_integer(
    "max_probes", 0,
    "With --find_max_batch: stop after this many train-step compiles and "
    "report the largest batch that fitted as a lower bound (0: search until "
    "exact).")
_NATIVE_SIZE = flags.DEFINE_string(
    "native_size", "500",
    "The dataset's largest image, 'HxW' or one side for a square (480x640 "
    "for NYUDv2, 256 for SIFT Flow), for configs that train "
    "(input.crop_size=0) or evaluate (input.eval_pad_size=0) at native image "
    "size with auto buckets: their largest bucket, the worst case compiled.")
_HBM_GIB = flags.DEFINE_float(
    "hbm_gib", 0.0,
    "Memory per chip in GiB; 0 = the chip's HBM from its device kind.")
_JSON = flags.DEFINE_string(
    "json", "", "Also write the results to this JSON file.")

# Cloud TPU accelerator types -> libtpu topology names (chips per axis).
ACCELERATOR_TOPOLOGIES = {
    "v4-8": "v4:2x2x1", "v4-16": "v4:2x2x2", "v4-32": "v4:2x2x4",
    "v4-64": "v4:2x4x4", "v4-128": "v4:4x4x4",
    "v5p-8": "v5p:2x2x1", "v5p-16": "v5p:2x2x2", "v5p-32": "v5p:2x2x4",
    "v5p-64": "v5p:2x4x4", "v5p-128": "v5p:4x4x4",
    "v5e-1": "v5e:1x1", "v5e-4": "v5e:2x2", "v5e-8": "v5e:2x4",
    "v5e-16": "v5e:4x4", "v5e-32": "v5e:4x8", "v5e-64": "v5e:8x8",
    "v5e-128": "v5e:8x16", "v5e-256": "v5e:16x16",
    "v6e-1": "v6e:1x1", "v6e-4": "v6e:2x2", "v6e-8": "v6e:2x4",
    "v6e-16": "v6e:4x4", "v6e-32": "v6e:4x8", "v6e-64": "v6e:8x8",
    "v6e-128": "v6e:8x16", "v6e-256": "v6e:16x16",
}
# v4 and v5p chips have two TensorCores that JAX drives as one device.
MEGACORE_GENERATIONS = ("v4", "v5p")
# HBM per chip by JAX's device kind (Cloud TPU system architecture pages).
HBM_BYTES = {
    "TPU v4": 32 * GIB,
    "TPU v5 lite": 16 * GIB,
    "TPU v5": 95 * GIB,
    "TPU v5p": 95 * GIB,
    "TPU v6 lite": 32 * GIB,
}
INSTALL_HINT = (
    "libtpu (the TPU compiler) is not installed. Install the matching "
    "jax[tpu]: pip install -e '.[tpu]', or, to keep this environment as it "
    "is, python -m venv --system-site-packages venv_tpu && venv_tpu/bin/pip "
    f"install 'jax[tpu]=={jax.__version__}' (about 700 MB) and run the dry "
    "run with venv_tpu/bin/python.")


class DryRunError(ValueError):
  """Bad input for the dry run; the message names the flag and the fix."""


# --------------------------------------------------------------------------
# Devices.
# --------------------------------------------------------------------------


def topology_name(topology: str) -> str:
  """A libtpu topology name (``v5e:4x4``) from either accepted form.

  Raises:
    DryRunError: Neither a known accelerator type nor a topology name.
  """
  name = topology.strip().lower().replace("v5litepod", "v5e")
  if name in ACCELERATOR_TOPOLOGIES:
    return ACCELERATOR_TOPOLOGIES[name]
  if re.fullmatch(r"v\d+[a-z]*:\d+(x\d+)+", name):
    return name
  raise DryRunError(
      f"--topology={topology}: not a TPU accelerator type (one of "
      f"{', '.join(ACCELERATOR_TOPOLOGIES)}) or a topology name such as "
      "v5e:4x4 or v4:2x2x4.")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
  """Hides what native code prints to stderr (libtpu's start-up warnings
  about the missing TPU); shows it again if the block raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def tpu_devices(topology: str) -> list[Any]:
  """The abstract devices of a TPU slice (every chip of every host).

  Raises:
    DryRunError: libtpu is missing, or the topology is unknown.
  """
  name = topology_name(topology)
  if importlib.util.find_spec("libtpu") is None:
    raise DryRunError(INSTALL_HINT)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  generation = name.split(":")[0]
  chip_config = ("megacore" if generation in MEGACORE_GENERATIONS
                 else "default")
  try:
    with _quiet_stderr():
      description = topologies.get_topology_desc(
          topology_name=name, platform="tpu", chip_config_name=chip_config)
  except Exception as e:  # pylint: disable=broad-except
    raise DryRunError(f"--topology={topology}: libtpu does not know the "
                      f"topology {name} ({e}).") from e
  return sorted(description.devices, key=lambda d: (d.process_index, d.id))


def hbm_bytes(device: Any, override_gib: float = 0.0) -> int:
  """The memory of one chip: ``override_gib``, else by device kind.

  CPU devices share this machine's memory; each is given all of it.

  Raises:
    DryRunError: An unknown device kind and no override.
  """
  if override_gib > 0:
    return int(override_gib * GIB)
  if device.platform == "cpu":
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if device.device_kind not in HBM_BYTES:
    raise DryRunError(f"the HBM of a {device.device_kind!r} chip is not "
                      "known here; pass it as --hbm_gib.")
  return HBM_BYTES[device.device_kind]


# --------------------------------------------------------------------------
# Compiling and measuring one step.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class StepReport:
  """What one compiled step needs per chip.

  Attributes:
    name: ``"train"`` or ``"eval"``.
    per_chip_batch: Images per chip and step.
    global_batch: Images per step over the slice.
    image_size: Side of the square images.
    argument_bytes: Inputs (state and batch shard).
    output_bytes: Outputs.
    alias_bytes: Outputs that reuse donated input buffers.
    temp_bytes: Temporaries (activations, gradients, workspace).
    code_bytes: The compiled program.
    flops: Floating-point operations of one step on one chip.
    compile_seconds: Lowering and compilation.
    capacity_bytes: The chip's memory.
    error: The compiler's out-of-memory message, if it gave up.
  """
  name: str
  per_chip_batch: int
  global_batch: int
  image_size: int
  capacity_bytes: int
  argument_bytes: int = 0
  output_bytes: int = 0
  alias_bytes: int = 0
  temp_bytes: int = 0
  code_bytes: int = 0
  flops: float = 0.0
  compile_seconds: float = 0.0
  error: str = ""

  @property
  def total_bytes(self) -> int:
    """Live at the peak: arguments, unaliased outputs, temporaries, code."""
    return (self.argument_bytes + self.output_bytes - self.alias_bytes
            + self.temp_bytes + self.code_bytes)

  @property
  def fits(self) -> bool:
    return not self.error and self.total_bytes <= self.capacity_bytes

  def describe(self) -> str:
    """Two lines: the step's shapes, then its per-chip memory and FLOPs."""
    head = (f"{self.name} step: {self.per_chip_batch} image(s) of "
            f"{self.image_size}x{self.image_size} per chip (global batch "
            f"{self.global_batch})")
    capacity = _gib(self.capacity_bytes)
    if self.error:
      return (f"{head}\n  does not fit in {capacity} per chip: {self.error} "
              f"(compile {self.compile_seconds:.0f} s)")
    headroom = self.capacity_bytes - self.total_bytes
    return (
        f"{head}\n  per chip: arguments {_gib(self.argument_bytes)}, outputs "
        f"{_gib(self.output_bytes)} ({_gib(self.alias_bytes)} aliased), temp "
        f"{_gib(self.temp_bytes)}, code {_gib(self.code_bytes)} -> total "
        f"{_gib(self.total_bytes)} of {capacity} "
        f"({'headroom' if headroom >= 0 else 'over by'} "
        f"{_gib(abs(headroom))}); {self.flops / 1e12:.3f} TFLOP per step; "
        f"compile {self.compile_seconds:.0f} s")


def _gib(num_bytes: float) -> str:
  if abs(num_bytes) < GIB / 10:
    return f"{num_bytes / (1 << 20):.1f} MiB"
  return f"{num_bytes / GIB:.2f} GiB"


_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory|"
                            r"exceeds? .*memory|Exceeded hbm capacity")


def measure(name: str, compiled: Any, **fields: Any) -> StepReport:
  """A report from a compiled step's memory and cost analyses.

  ``cost_analysis()["flops"]`` is the per-chip count of the SPMD program;
  its ``optimal_seconds`` is not a time (it can be negative) and is unused.
  """
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else {}
  return StepReport(
      name=name, argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      code_bytes=int(memory.generated_code_size_in_bytes),
      flops=float((cost or {}).get("flops", 0.0)), **fields)


def compile_step(name: str, step: Any, args: Sequence[Any],
                 **fields: Any) -> StepReport:
  """Lowers and compiles ``step`` for ``args`` (shapes) and measures it.

  An out-of-memory compile error becomes a report that does not fit; any
  other error is raised.
  """
  start = time.perf_counter()
  try:
    compiled = step.lower(*args).compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if not _OUT_OF_MEMORY.search(message):
      raise
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return StepReport(name=name, error=" ".join(lines[:2])[:400],
                      compile_seconds=time.perf_counter() - start, **fields)
  report = measure(name, compiled, **fields)
  report.compile_seconds = time.perf_counter() - start
  return report


# --------------------------------------------------------------------------
# The steps of a config.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
  """A config's model, optimizer and abstract train state, as training has."""
  config: ml_collections.ConfigDict
  model: models.FCN
  tx: Any
  state: Any  # jax.ShapeDtypeStruct leaves.
  spec: models.ModelSpec


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Builds what ``loop.train_and_evaluate`` builds, as shapes only.

  ``config.init_from`` is not read: copying weights by name keeps the
  model's own shapes.
  """
  checked = ml_collections.ConfigDict(config.to_dict())
  checked.init_from = ""  # No weights are loaded.
  run_config.validate_config(checked)
  spec = run_config.model_spec(checked)
  model = spec.create()
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  params = jax.eval_shape(
      lambda: models.init_variables(model, init_rng)["params"])
  tx = state_lib.create_optimizer(config, params, model)
  state = jax.eval_shape(
      lambda p: state_lib.create_train_state(p, tx, state_rng), params)
  return Setup(config, model, tx, state, spec)


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
        f"--config.{field}={low} or {high}.")
  return global_batch // num_chips


def _batch_shapes(spec: models.ModelSpec, num_chips: int,
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


def native_shape(config: ml_collections.ConfigDict,
                 native_size: int | str | tuple[int, int]) -> tuple[int, int]:
  """The worst-case native-size shape compiled: the largest of explicit
  ``config.input.buckets``, else ``native_size`` (with ``auto`` the largest
  bucket is the split's largest height x width: 500x500 for VOC).

  Raises:
    DryRunError: ``native_size`` is neither one side nor ``HxW``.
  """
  parsed = buckets_lib.parse(config.input.get("buckets", buckets_lib.NONE))
  if isinstance(parsed, tuple):
    return parsed[-1]
  if isinstance(native_size, tuple):
    return native_size
  text = str(native_size).strip().lower()
  try:
    sides = [int(side) for side in text.split("x")]
  except ValueError:
    sides = []
  if len(sides) == 1:
    sides *= 2
  if len(sides) != 2 or min(sides) < 1:
    raise DryRunError(f"--native_size must be one side or HxW, e.g. 500 or "
                      f"480x640, got {native_size!r}.")
  return sides[0], sides[1]


def _train_buckets(config: ml_collections.ConfigDict) -> bool:
  return input_config.InputConfig.from_config(config).train_buckets


def _eval_buckets(config: ml_collections.ConfigDict) -> bool:
  cfg = input_config.InputConfig.from_config(config)
  return (cfg.eval_pad_size == 0 and cfg.buckets != buckets_lib.NONE
          and run_config.tta_from_config(config).is_identity)


def train_report(built: Setup, devices: Sequence[Any], per_chip_batch: int,
                 capacity: int, native_size: int | str) -> StepReport:
  """Compiles the train step for ``per_chip_batch`` images per chip."""
  config = built.config
  size = config.input.crop_size or native_shape(config, native_size)
  step = step_lib.make_train_fn(built.model, built.tx, config, devices)
  batch = _batch_shapes(built.spec, len(devices), per_chip_batch, size,
                        with_valid=False, with_sizes=_train_buckets(config))
  return compile_step("train", step, (built.state, batch),
                      per_chip_batch=per_chip_batch,
                      global_batch=per_chip_batch * len(devices),
                      image_size=size, capacity_bytes=capacity)


def eval_report(built: Setup, devices: Sequence[Any], capacity: int,
                native_size: int | str) -> StepReport:
  """Compiles the eval step for ``config.eval_batch_size`` over the chips."""
  config = built.config
  per_chip_batch = per_chip(config.eval_batch_size, len(devices),
                            "eval_batch_size")
  size = config.input.eval_pad_size or native_shape(config, native_size)
  step, _ = evaluator.make_eval_fn(built.model, config, devices=devices)
  batch = _batch_shapes(built.spec, len(devices), per_chip_batch, size,
                        with_valid=True, with_sizes=_eval_buckets(config))
  return compile_step("eval", step, (built.state.params, batch),
                      per_chip_batch=per_chip_batch,
                      global_batch=config.eval_batch_size, image_size=size,
                      capacity_bytes=capacity)


def find_max_batch(probe: Callable[[int], StepReport], start: int,
                   limit: int = 4096, max_probes: int = 0
                   ) -> tuple[int, dict[int, StepReport]]:
  """The largest per-chip batch whose step fits, and every probe's report.

  Memory grows about linearly with the batch, so probes go where a straight
  line puts the capacity. From a batch that fits: where its fixed part
  (everything but the temporaries) and its temporaries per image put it, at
  most 4x further, until one does not fit. From one that does not: halving
  until one fits. Then inside the bracket: where the line through its ends
  meets the capacity (through the end that fits when the compiler did not
  say how much the other needed), until the ends are 1 apart.

  Args:
    probe: Compiles the step for a per-chip batch.
    start: The first batch to try.
    limit: The largest batch tried (the answer is then ``>= limit``).
    max_probes: Stop after this many compiles (0: no limit). The answer is
      then the largest batch that fitted, a lower bound; :func:`search_bounds`
      says how tight.

  Returns:
    ``(largest, reports)``; ``largest`` is 0 when even 1 does not fit.
  """
  reports: dict[int, StepReport] = {}

  def fits(batch: int) -> bool:
    if batch not in reports:
      reports[batch] = probe(batch)
    return reports[batch].fits

  def out_of_probes() -> bool:
    return bool(max_probes) and len(reports) >= max_probes

  if fits(start):
    low, high = start, None
    while high is None:
      if low >= limit or out_of_probes():
        return low, reports
      guess = min(max(_extrapolate(reports[low]), low + 1), low * 4, limit)
      if fits(guess):
        low = guess
      else:
        high = guess
  else:
    high, low = start, None
    while low is None:
      if high == 1 or out_of_probes():
        return 0, reports
      if fits(high // 2):
        low = high // 2
      else:
        high //= 2
  while high - low > 1 and not out_of_probes():
    fits(_next_probe(reports[low], reports[high], low, high))
    low = max(b for b in reports if b < high and reports[b].fits)
    high = min(b for b in reports if b > low and not reports[b].fits)
  return low, reports


def search_bounds(reports: Mapping[int, StepReport]) -> tuple[int, int | None]:
  """``(largest batch that fitted, smallest that did not)`` of the probes
  (0 / None where there is none): the answer is exact when they are 1 apart."""
  fitted = [b for b, r in reports.items() if r.fits]
  low = max(fitted, default=0)
  failed = [b for b, r in reports.items() if not r.fits and b > low]
  return low, min(failed, default=None)


def _extrapolate(report: StepReport) -> int:
  """The batch at which one fitting report's memory meets the capacity.

  The fixed part (all but the temporaries) stays; the temporaries grow in
  proportion to the batch. (They have a fixed part too, so this is low.)
  """
  if not report.temp_bytes:
    return 4 * report.per_chip_batch
  fixed = report.total_bytes - report.temp_bytes
  per_image = report.temp_bytes / report.per_chip_batch
  return math.floor((report.capacity_bytes - fixed) / per_image)


def _next_probe(low_report: StepReport, high_report: StepReport, low: int,
                high: int) -> int:
  """Where a straight line through the bracket's totals meets the capacity.

  Without the failed end's total (the compiler did not quote it), from the
  end that fits alone.
  """
  used_high = _bytes_used(high_report)
  if used_high > low_report.total_bytes:
    slope = (used_high - low_report.total_bytes) / (high - low)
    guess = low + math.floor(
        (low_report.capacity_bytes - low_report.total_bytes) / slope)
  else:
    guess = _extrapolate(low_report)
  return min(max(guess, low + 1), high - 1)


def _bytes_used(report: StepReport) -> int:
  """A step's total, or the one the compiler quoted when it gave up."""
  if not report.error:
    return report.total_bytes
  match = re.search(r"[Uu]sed ([\d.]+)([KMGT]?)i?B? of", report.error)
  if not match:
    return 0
  scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": GIB, "T": 1 << 40}
  return int(float(match.group(1)) * scale[match.group(2)])


# --------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------


def dry_run(config: ml_collections.ConfigDict, devices: Sequence[Any], *,
            capacity: int, native_size: int | str = 500, search: bool = False,
            max_probes: int = 0,
            on_report: Callable[[StepReport], None] = lambda report: None
            ) -> dict[str, Any]:
  """Compiles a config's steps for ``devices`` and reports what they need.

  Args:
    config: A training config.
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
  per_chip_batch = per_chip(config.batch_size, num_chips, "batch_size")
  if (not config.input.crop_size and per_chip_batch != 1
      and not _train_buckets(config)):
    raise DryRunError(
        f"config.input.crop_size=0 (native image size) trains one image per "
        f"chip, but config.batch_size={config.batch_size} gives "
        f"{per_chip_batch} per chip on {num_chips} chips: pass "
        f"--config.batch_size={num_chips} or set a crop size.")
  built = setup(config)

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
    largest, probes = find_max_batch(probe, per_chip_batch,
                                     max_probes=max_probes)
    _, first_failing = search_bounds(probes)
    results["max_per_chip_batch"] = largest
    results["first_failing_batch"] = first_failing
    results["max_per_chip_batch_exact"] = (
        first_failing is not None and first_failing - largest == 1) or (
            largest == 0 and 1 in probes)
    results["probes"] = [probes[b] for b in sorted(probes)]
  return results


def search_summary(results: Mapping[str, Any], num_chips: int) -> str:
  """The line the command prints after ``--find_max_batch`` ("" without)."""
  lines = []
  if "max_per_chip_batch" in results:
    largest = results["max_per_chip_batch"]
    probed = ", ".join(
        f"{r.per_chip_batch}: {'fits' if r.fits else 'no'}"
        for r in results["probes"])
    exact = results.get("max_per_chip_batch_exact", True)
    if largest and not exact:
      above = results.get("first_failing_batch")
      lines.append(
          f"largest per-chip training batch that fits: at least {largest} "
          f"(--config.batch_size={largest * num_chips}); "
          + (f"{above} does not fit; " if above else "")
          + f"the probe budget (--max_probes) ended the search (probed "
          f"{probed})")
    elif largest:
      lines.append(
          f"largest per-chip training batch that fits: {largest} "
          f"(--config.batch_size={largest * num_chips}; probed {probed})")
    else:
      lines.append(f"no training batch fits, not even 1 image per chip "
                   f"(probed {probed})")
  return "\n".join(lines)


def failure_message(results: Mapping[str, Any], num_chips: int) -> str:
  """The one-line error for a step that does not fit."""
  failed = [r for r in (results["train"], results["eval"]) if not r.fits]
  parts = []
  for report in failed:
    need = (f"needs {_gib(report.total_bytes)}" if not report.error
            else "ran out of memory")
    parts.append(f"the {report.name} step {need} per chip of "
                 f"{_gib(report.capacity_bytes)}")
  fix = ("lower config.batch_size / config.eval_batch_size or the image "
         "size, or train in config.model.dtype=bfloat16")
  if results.get("max_per_chip_batch"):
    fix = (f"the largest per-chip training batch that fits is "
           f"{results['max_per_chip_batch']}: --config.batch_size="
           f"{results['max_per_chip_batch'] * num_chips}")
  elif "max_per_chip_batch" in results:
    fix = "not even 1 image per chip fits: " + fix
  else:
    fix += " (--find_max_batch finds the largest training batch that fits)"
  return f"does not fit: {'; '.join(parts)}; {fix}."


def to_json(results: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for key, value in results.items():
    if isinstance(value, StepReport):
      value = dict(dataclasses.asdict(value), total_bytes=value.total_bytes,
                   fits=value.fits)
    elif key == "probes":
      value = [dict(dataclasses.asdict(r), total_bytes=r.total_bytes,
                    fits=r.fits) for r in value]
    out[key] = value
  return out


def main(argv: list[str]) -> None:
  cli.check_no_arguments(argv)
  config = cli.loaded_config()
  if "JAX_PLATFORMS" not in os.environ:
    # Host work on the CPU: no TPU runtime start-up (and its warnings) on a
    # machine without a TPU; the TPU compiler needs none.
    jax.config.update("jax_platforms", "cpu")
  compilation_cache.configure(config.get("compilation_cache_dir"))
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  topology = _TOPOLOGY.value
  try:
    if topology == "cpu":
      devices, name, hosts = jax.devices("cpu"), "cpu", 1
    else:
      devices, name = tpu_devices(topology), topology_name(topology)
      hosts = len({d.process_index for d in devices})
    capacity = hbm_bytes(devices[0], _HBM_GIB.value)
    print(f"fcn_jax dry run: {config_file} on {name}: "
          f"{len(devices)} x {devices[0].device_kind} "
          f"({_gib(capacity)} each), {hosts} host(s); "
          f"parallel={config.parallel}, {config.model.name} in "
          f"{config.model.dtype}", flush=True)
    # The layers the target's training builds (the host here is a CPU).
    with models.layers.target_platform(devices[0].platform):
      results = dry_run(config, devices, capacity=capacity,
                        native_size=_NATIVE_SIZE.value,
                        search=_FIND_MAX_BATCH.value,
                        max_probes=_MAX_PROBES.value,
                        on_report=lambda r: print(r.describe(), flush=True))
  except ValueError as e:  # DryRunError and config errors: bad input.
    cli.fail(str(e))
  if _FIND_MAX_BATCH.value:
    print(search_summary(results, len(devices)))
  if _JSON.value:
    record = {"config": config_file, "topology": topology,
              "topology_name": name, "chips": len(devices), "hosts": hosts,
              "device_kind": devices[0].device_kind,
              "capacity_bytes": capacity, "parallel": config.parallel,
              "model": config.model.name, "dtype": config.model.dtype,
              "jax": jax.__version__, **to_json(results)}
    with open(_JSON.value, "w") as f:
      json.dump(record, f, indent=2)
  if not results["fits"]:
    sys.exit(f"error: {failure_message(results, len(devices))}")
  print("fits.")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main, flags_parser=cli.parse_flags)
