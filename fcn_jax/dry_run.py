r"""Compiles the real train and eval steps for TPUs or GPUs, without them.

  python -m fcn_jax.dry_run --config configs/voc_fcn8s.py --topology h100
  python -m fcn_jax.dry_run --config configs/voc_fcn8s_modern.py \
      --topology v5e-16 [--find_max_batch] [--config.<field>=<value> ...]

JAX compiles for devices a machine does not have ("deviceless AOT"): for a
TPU slice with ``libtpu`` (``pip install -e ".[tpu]"``), for NVIDIA GPUs with
the CUDA plugin (``pip install -e ".[gpu-aot]"``, no GPU, driver or CUDA
needed). The dry run builds the train state, the train step and the eval
step with training's own functions, as shapes, for the config's global
batches split over every device (:mod:`fcn_jax.aot.steps`: native-size
configs at their largest shape bucket), compiles both and prints, per
device, the bytes of the arguments, outputs (less those aliased to donated
arguments), temporaries and code, their total against what the device
offers, the FLOPs of one step and the compile time; it exits with status 1
when a step does not fit. ``--find_max_batch`` also finds the largest
per-device training batch that fits (a few compiles).

Topologies: a TPU slice (``v5e-16``, ``v4:2x2x4``); GPUs as ``MODEL``,
``MODEL:GPUS`` or ``MODEL:HOSTSxGPUS`` (``h100``, ``a100-40``, ``h200``,
``a100-80:8``, ``h100:2x8``); ``cpu`` for this machine's CPU devices (no
compiler to install; the tests use it). One process plays every host; both
``config.parallel`` modes compile so.

GPU figures are a lower bound: without a GPU the compiler cannot autotune,
so cuDNN's workspaces are not counted; a GPU offers the 75% of its memory
JAX preallocates; the FLOPs are counted on the program before optimisation
(the compile-only GPU compiler gives no count). The GPU compiler takes
~20 s per FCN-8s step on one core, the TPU compiler 15-20 minutes;
``tools/dry_run_table.py`` makes ``docs/gpu_dry_run.md`` and
``docs/tpu_dry_run.md``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import flags
import jax
from ml_collections import config_flags

from fcn_jax import cli
from fcn_jax import models
from fcn_jax.aot import gib
from fcn_jax.aot import report
from fcn_jax.aot import steps
from fcn_jax.aot import targets

config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    "topology", None,
    "TPU slice: a Cloud TPU accelerator type (v4-8, v5e-16, v5litepod-16, "
    "v5p-8, v6e-8, ...) or a libtpu topology name (v5e:4x4, v4:2x2x4, ...); "
    "GPUs: h100, h200, a100-80 or a100-40, optionally :GPUS or "
    ":HOSTSxGPUS (h100:8, a100-40:2x8); 'cpu' for this machine's CPU "
    "devices.")
_FIND_MAX_BATCH = flags.DEFINE_bool(
    "find_max_batch", False,
    "Also find the largest per-device training batch that fits (one "
    "train-step compile per probe).")
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
    "Memory per device a step may use, in GiB; 0 = the TPU chip's HBM, or "
    "JAX's preallocated share of the GPU's memory (75%, or "
    "XLA_CLIENT_MEM_FRACTION).")
_JSON = flags.DEFINE_string(
    "json", "", "Also write the results to this JSON file.")


def _compile(config: Any, config_file: str) -> tuple[targets.Target, dict]:
  """The target's devices, then both steps compiled, each printed as it
  comes."""
  target = targets.make_target(_TOPOLOGY.value, _HBM_GIB.value)
  print(f"fcn_jax dry run: {config_file} on {target.name}: "
        f"{len(target.devices)} x {target.device_kind} "
        f"({gib(target.capacity_bytes)} each), {target.hosts} host(s); "
        f"parallel={config.parallel}, {config.model.name} in "
        f"{config.model.dtype}", flush=True)
  if target.caveat:
    print(target.caveat, flush=True)
  # The layers the target's training builds (the host here is a CPU).
  with models.layers.target_platform(target.devices[0].platform):
    results = steps.dry_run(
        config, target.devices, capacity=target.capacity_bytes,
        native_size=_NATIVE_SIZE.value, search=_FIND_MAX_BATCH.value,
        max_probes=_MAX_PROBES.value,
        on_report=lambda r: print(r.describe(), flush=True))
  return target, results


def main(argv: list[str]) -> None:
  cli.check_no_arguments(argv)
  config = cli.loaded_config()
  if "JAX_PLATFORMS" not in os.environ:
    # Host work on the CPU: no device runtime starts (nor warns) on a
    # machine without the device, and the CUDA plugin registers only so.
    jax.config.update("jax_platforms", "cpu")
  # No persistent compilation cache: the compile times reported are
  # compiles, and executables for absent devices are no use to this machine.
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  # Bad input (flags, config, topology, a batch that does not split) is one
  # line and exit status 2, as for every command.
  target, results = cli.run_reporting_errors(_compile, config, config_file)
  num_devices = len(target.devices)
  if _FIND_MAX_BATCH.value:
    print(report.search_summary(results, num_devices))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(report.record(config, config_file, _TOPOLOGY.value, target,
                              results), f, indent=2)
  if not results["fits"]:
    sys.exit(f"error: {report.failure_message(results, num_devices)}")
  print("fits.")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  cli.run_main(main, flags_parser=cli.parse_flags,
               interrupted="the dry run did not finish")
