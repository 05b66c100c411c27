"""Process environment for the benchmarks, set before JAX initialises.

Imports nothing from JAX: the flags must be in the environment before the
first backend starts.

* ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that PyTorch can share the GPU
  (JAX would otherwise reserve 75% of its memory at start-up).
* ``fcn_jax.xla_flags.TUNED_CPU_FLAGS`` (the flags ``python -m
  fcn_jax.main`` sets by default) keeps XLA:CPU from handing convolutions
  (and the element-wise ops fused around them) to its YNNPACK library
  fusions, so they run on XLA's own Eigen convolution kernels instead:
  FCN-8s forward at 224x224 on this project's 2-core Sapphire Rapids machine
  went from 0.91 s to 0.49 s with jaxlib 0.10.2 (``benchmarks/README.md``).
  The flags only affect the CPU backend. Pass ``--xla-cpu-flags=default`` to
  leave XLA's defaults; a jaxlib that does not know a flag gets none.
"""

from __future__ import annotations

import os

from fcn_jax import xla_flags

TUNED_CPU_FLAGS = xla_flags.TUNED_CPU_FLAGS
_CHOICE = "--xla-cpu-flags"


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
  return xla_flags.configure("tuned")
