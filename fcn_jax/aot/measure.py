"""Compiling one step for the target and reading what it needs per device.

The memory comes from the compiled program's ``memory_analysis()`` on every
kind of device. The FLOPs come from its ``cost_analysis()`` where the
compiler gives one (TPU, CPU); compile-only GPUs give none, so there they
are XLA's count on the step's lowered program, before optimisation, by the
CPU client (:func:`lowered_flops`); the report says which
(``flops_counted``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any, Sequence

import jax

from fcn_jax.aot import gib

_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory|"
                            r"exceeds? .*memory|Exceeded hbm capacity")


@dataclasses.dataclass
class StepReport:
  """What one compiled step needs per device.

  Attributes:
    name: ``"train"`` or ``"eval"``.
    per_chip_batch: Images per device and step.
    global_batch: Images per step over every device.
    image_size: Side of the square images, or ``(height, width)``.
    capacity_bytes: What a step may use of each device's memory.
    argument_bytes: Inputs (state and batch shard).
    output_bytes: Outputs.
    alias_bytes: Outputs that reuse donated input buffers.
    temp_bytes: Temporaries (activations, gradients, workspace).
    code_bytes: The compiled program.
    flops: Floating-point operations of one step on one device.
    flops_counted: ``"compiled"`` (the optimised program) or ``"lowered"``
      (before optimisation, where the compiler gives no count).
    compile_seconds: Lowering and compilation, wall time.
    compile_cpu_seconds: The same in CPU time, of every thread of this
      process and of the tools it ran (the PTX assembler): what the compile
      costs, unlike the wall time hardly changed by other work on a busy
      machine.
    error: The compiler's out-of-memory message, if it gave up.
  """
  name: str
  per_chip_batch: int
  global_batch: int
  image_size: int | tuple[int, int]
  capacity_bytes: int
  argument_bytes: int = 0
  output_bytes: int = 0
  alias_bytes: int = 0
  temp_bytes: int = 0
  code_bytes: int = 0
  flops: float = 0.0
  flops_counted: str = "compiled"
  compile_seconds: float = 0.0
  compile_cpu_seconds: float = 0.0
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
    """Two lines: the step's shapes, then its per-device memory and FLOPs."""
    height, width = ((self.image_size,) * 2 if isinstance(self.image_size, int)
                     else self.image_size)
    head = (f"{self.name} step: {self.per_chip_batch} image(s) of "
            f"{height}x{width} per chip (global batch {self.global_batch})")
    capacity = gib(self.capacity_bytes)
    if self.error:
      return (f"{head}\n  does not fit in {capacity} per chip: {self.error} "
              f"(compile {self.compile_seconds:.0f} s)")
    headroom = self.capacity_bytes - self.total_bytes
    counted = "" if self.flops_counted == "compiled" else " (before optimisation)"
    return (
        f"{head}\n  per chip: arguments {gib(self.argument_bytes)}, outputs "
        f"{gib(self.output_bytes)} ({gib(self.alias_bytes)} aliased), temp "
        f"{gib(self.temp_bytes)}, code {gib(self.code_bytes)} -> total "
        f"{gib(self.total_bytes)} of {capacity} "
        f"({'headroom' if headroom >= 0 else 'over by'} "
        f"{gib(abs(headroom))}); {self.flops / 1e12:.3f} TFLOP per step"
        f"{counted}; compile {self.compile_seconds:.0f} s")

  def to_json(self) -> dict[str, Any]:
    return dict(dataclasses.asdict(self), total_bytes=self.total_bytes,
                fits=self.fits)


def lowered_flops(lowered: Any) -> float:
  """XLA's FLOP count of a lowered step, per device, before optimisation.

  The CPU client's HLO cost analysis runs on the step's HLO module (the
  public ``Lowered.cost_analysis()`` asks the target's client, which a
  compile-only plugin does not implement). The project's steps are
  per-device programs in both ``config.parallel`` modes (``pmap``, and
  ``jit`` of ``shard_map``), so the count is one device's; on the CPU it
  agrees with the compiled program's (``tests/dry_run_test.py``).
  """
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  module = lowered._lowering.hlo().as_hlo_module()  # pylint: disable=protected-access
  cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return float(cost.get("flops", 0.0))


def measure(name: str, compiled: Any, lowered: Any = None,
            **fields: Any) -> StepReport:
  """A report from a compiled step's memory and cost analyses.

  ``cost_analysis()["flops"]`` is the per-device count of the SPMD program;
  its ``optimal_seconds`` is not a time (it can be negative) and is unused.
  Without a cost analysis, the FLOPs of ``lowered`` (:func:`lowered_flops`).
  """
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else {}
  if cost or lowered is None:
    flops, counted = float((cost or {}).get("flops", 0.0)), "compiled"
  else:
    flops, counted = lowered_flops(lowered), "lowered"
  return StepReport(
      name=name, argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      code_bytes=int(memory.generated_code_size_in_bytes),
      flops=flops, flops_counted=counted, **fields)


def _cpu_seconds() -> float:
  """CPU time of this process's threads and its finished child processes."""
  times = os.times()
  return (times.user + times.system + times.children_user
          + times.children_system)


def compile_step(name: str, step: Any, args: Sequence[Any],
                 **fields: Any) -> StepReport:
  """Lowers and compiles ``step`` for ``args`` (shapes) and measures it.

  An out-of-memory compile error becomes a report that does not fit; any
  other error is raised.
  """
  start, start_cpu = time.perf_counter(), _cpu_seconds()
  try:
    lowered = step.lower(*args)
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if not _OUT_OF_MEMORY.search(message):
      raise
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return StepReport(name=name, error=" ".join(lines[:2])[:400],
                      compile_seconds=time.perf_counter() - start,
                      compile_cpu_seconds=_cpu_seconds() - start_cpu,
                      **fields)
  seconds, cpu_seconds = (time.perf_counter() - start,
                          _cpu_seconds() - start_cpu)
  report = measure(name, compiled, lowered, **fields)
  report.compile_seconds, report.compile_cpu_seconds = seconds, cpu_seconds
  return report
