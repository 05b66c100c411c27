"""Test set-up, before JAX starts: 8 fake CPU devices and the commands' flags.

The suite runs under the XLA:CPU flags that every command sets
(:func:`fcn_jax.xla_flags.configure`, ``tuned`` unless
``FCN_JAX_XLA_CPU_FLAGS=default``), so that it tests what users run;
``tests/xla_precision_test.py`` measures XLA's own defaults beside them.
"""

import os

from fcn_jax import xla_flags  # Imports nothing from JAX.

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
XLA_CPU_FLAGS = xla_flags.configure()
# No persistent compilation cache in tests (commands run in-process would
# otherwise write to ~/.cache); compilation_cache_test turns it on itself.
os.environ.setdefault("FCN_JAX_COMPILATION_CACHE_DIR", "")


def pytest_report_header():
  return f"XLA:CPU flags: {XLA_CPU_FLAGS} ({os.environ.get('XLA_FLAGS', '')})"
