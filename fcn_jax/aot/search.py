"""The largest per-device training batch that fits: a few compiles.

Memory grows about linearly with the batch, so each probe goes where a
straight line through what the compiles so far used meets the capacity.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Mapping

from fcn_jax.aot import GIB
from fcn_jax.aot.measure import StepReport


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
