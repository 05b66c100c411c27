"""XLA:CPU flags that the training entry point sets before JAX starts.

:data:`TUNED_CPU_FLAGS` keeps XLA:CPU from handing convolutions (and the
element-wise ops fused around them) to its YNNPACK library fusions, so that
they run on XLA's own Eigen kernels: FCN-8s at 224x224 on this project's
2-core machine ran its forward pass in 0.49 s instead of 0.91 s with jaxlib
0.10.2, and the quickstart trains faster (``benchmarks/README.md``). The
flags touch only the CPU backend.

Every command (``python -m fcn_jax.main`` ...) adds them to ``XLA_FLAGS``
by default (a choice, not a requirement), and so does the test suite
(``tests/conftest.py``): ``--xla_cpu_flags=default`` or the environment
variable ``FCN_JAX_XLA_CPU_FLAGS=default`` leaves XLA's own defaults. A
jaxlib that does not know the flags (XLA aborts on unknown flags) gets none:
versions other than the ones measured are checked once in a subprocess.

Importing :mod:`fcn_jax` sets nothing (a library does not change how the
user's JAX starts): in a notebook or a script of your own, call
:func:`configure` before the first JAX computation (importing JAX is fine;
its CPU backend reads ``XLA_FLAGS`` when it starts)::

  from fcn_jax import xla_flags
  xla_flags.configure()  # "tuned", or "too_late" once a backend runs

What XLA's defaults cost is measured, not assumed: speed in
``benchmarks/README.md``, float32 gradient precision in
``tests/xla_precision_test.py`` (README, "XLA:CPU flags").

This module imports nothing from JAX: flags must be in the environment before
the first backend starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from fcn_jax import errors

TUNED_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type="
                   "-dot,-eltwise,-reduce,-individual_convolution,"
                   "-individual_dot")
CHOICES = ("tuned", "default")
ENV_VAR = "FCN_JAX_XLA_CPU_FLAGS"
# jaxlib versions known to accept TUNED_CPU_FLAGS (others are probed): 0.10.2
# and 0.12.1 (the Python 3.12 CI venv) were run with them.
_KNOWN_JAXLIB_PREFIXES = ("0.10.", "0.12.")


def jaxlib_version() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return ""


def flags_supported(flags: str) -> bool:
  """Whether this jaxlib starts its CPU backend with ``flags`` added."""
  if flags == TUNED_CPU_FLAGS and jaxlib_version().startswith(
      _KNOWN_JAXLIB_PREFIXES):
    return True
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " "
                                    + flags).strip(), JAX_PLATFORMS="cpu")
  probe = "import jax; jax.devices('cpu')"
  result = subprocess.run([sys.executable, "-c", probe], env=env,
                          capture_output=True, check=False, timeout=300)
  return result.returncode == 0


def backend_started() -> bool:
  """Whether a JAX backend already exists (then flags come too late)."""
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return bool(getattr(xla_bridge, "_backends", None))


def configure(choice: str | None = None) -> str:
  """Adds :data:`TUNED_CPU_FLAGS` to ``XLA_FLAGS`` unless told not to.

  Args:
    choice: ``tuned`` or ``default``; None reads :data:`ENV_VAR` (``tuned``
      when unset).

  Returns:
    What applies: ``tuned``, ``default``, ``unsupported`` (this jaxlib does
    not know the flags) or ``too_late`` (a backend had already started).

  Raises:
    errors.UserError: An unknown choice.
  """
  if choice is None:
    choice = os.environ.get(ENV_VAR, "tuned") or "tuned"
  if choice not in CHOICES:
    raise errors.UserError(
        f"XLA:CPU flags must be one of {CHOICES} (--xla_cpu_flags or "
        f"${ENV_VAR}), got {choice!r}")
  if choice == "default":
    return choice
  if TUNED_CPU_FLAGS in os.environ.get("XLA_FLAGS", ""):
    return "tuned"
  if backend_started():
    return "too_late"
  if not flags_supported(TUNED_CPU_FLAGS):
    return "unsupported"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + TUNED_CPU_FLAGS).strip()
  return "tuned"
