"""What the dry run prints and writes: the search's line, the one-line
failure with its fix, and the JSON record (one schema for every kind of
device)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections

from fcn_jax.aot import gib
from fcn_jax.aot.measure import StepReport
from fcn_jax.aot.targets import Target


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
    need = (f"needs {gib(report.total_bytes)}" if not report.error
            else "ran out of memory")
    parts.append(f"the {report.name} step {need} per chip of "
                 f"{gib(report.capacity_bytes)}")
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
  """The results with each :class:`StepReport` as a dict (its totals too)."""
  out = {}
  for key, value in results.items():
    if isinstance(value, StepReport):
      value = value.to_json()
    elif key == "probes":
      value = [r.to_json() for r in value]
    out[key] = value
  return out


def record(config: ml_collections.ConfigDict, config_file: str, topology: str,
           target: Target, results: Mapping[str, Any]) -> dict[str, Any]:
  """The JSON the command writes (``--json``): the run, then the results."""
  return {"config": config_file, "topology": topology,
          "topology_name": target.name, "kind": target.kind,
          "chips": len(target.devices), "hosts": target.hosts,
          "device_kind": target.device_kind,
          "memory_bytes": target.memory_bytes,
          "capacity_bytes": target.capacity_bytes, "caveat": target.caveat,
          "parallel": config.parallel, "model": config.model.name,
          "dtype": config.model.dtype, "jax": jax.__version__,
          **to_json(results)}
