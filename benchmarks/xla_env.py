"""Process environment for the benchmarks, set before JAX initialises.

Imports nothing from JAX: the flags must be in the environment before the
first backend starts.

* ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that PyTorch can share the GPU
  (JAX would otherwise reserve 75% of its memory at start-up).
* :data:`TUNED_CPU_FLAGS` keeps XLA:CPU from handing convolutions (and the
  element-wise ops fused around them) to its YNNPACK library fusions, so they
  run on XLA's own Eigen convolution kernels instead: FCN-8s forward at
  224x224 on this project's 2-core Sapphire Rapids machine went from 0.91 s
  to 0.49 s with jaxlib 0.10.2 (``benchmarks/README.md``). The flags only
  affect the CPU backend. Pass ``--xla-cpu-flags=default`` to leave XLA's
  defaults; a jaxlib that does not know a flag gets none (checked in a
  subprocess, because XLA aborts on unknown flags).
"""

from __future__ import annotations

import os
import subprocess
import sys

TUNED_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type="
                   "-dot,-eltwise,-reduce,-individual_convolution,"
                   "-individual_dot")
_CHOICE = "--xla-cpu-flags"


def _flags_supported(flags: str) -> bool:
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " "
                                    + flags).strip(), JAX_PLATFORMS="cpu")
  probe = "import jax; jax.devices('cpu')"
  result = subprocess.run([sys.executable, "-c", probe], env=env,
                          capture_output=True, check=False, timeout=300)
  return result.returncode == 0


def configure(argv: list[str]) -> str:
  """Sets the environment from ``--xla-cpu-flags={tuned,default}`` in argv.

  Returns:
    What was applied: ``tuned``, ``default`` or ``unsupported``.
  """
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  choice = "tuned"
  for i, arg in enumerate(argv):
    if arg.startswith(_CHOICE + "="):
      choice = arg.split("=", 1)[1]
    elif arg == _CHOICE and i + 1 < len(argv):
      choice = argv[i + 1]
  if choice != "tuned":
    return choice
  if TUNED_CPU_FLAGS in os.environ.get("XLA_FLAGS", ""):
    return "tuned"
  if not _flags_supported(TUNED_CPU_FLAGS):
    return "unsupported"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + TUNED_CPU_FLAGS).strip()
  return "tuned"
