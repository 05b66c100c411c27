"""Test set-up, before JAX starts: 8 fake CPU devices and the commands' flags.

The suite runs under the XLA:CPU flags that every command sets
(:func:`fcn_jax.xla_flags.configure`, ``tuned`` unless
``FCN_JAX_XLA_CPU_FLAGS=default``), so that it tests what users run;
``tests/xla_precision_test.py`` measures XLA's own defaults beside them.
"""

import os
import shutil
import tempfile

from fcn_jax import compilation_cache  # Imports JAX only when called.
from fcn_jax import xla_flags  # Imports nothing from JAX.

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
XLA_CPU_FLAGS = xla_flags.configure()

# One persistent compilation cache for the whole run, as users' commands have
# one by default: the suite compiles the same tiny FCN steps in many tests,
# its two workers and the commands they start (each a process that would
# compile them again), so each program compiles once and is loaded after.
# A temporary folder made by the first process (xdist's workers inherit its
# variable), removed at the end; never the user's ~/.cache.
_CACHE_VAR = "FCN_JAX_TEST_COMPILATION_CACHE"
_OWN_CACHE = _CACHE_VAR not in os.environ
if _OWN_CACHE:
  os.environ[_CACHE_VAR] = tempfile.mkdtemp(prefix="fcn_jax_test_cache_")
os.environ[compilation_cache.ENV_VAR] = os.environ[_CACHE_VAR]
compilation_cache.configure(None)  # In-process runs; commands read the variable.


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ[_CACHE_VAR], ignore_errors=True)


def pytest_report_header():
  return f"XLA:CPU flags: {XLA_CPU_FLAGS} ({os.environ.get('XLA_FLAGS', '')})"
