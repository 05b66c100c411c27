"""Test set-up: 8 fake CPU devices, forced before JAX initialises."""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache in tests (commands run in-process would
# otherwise write to ~/.cache); compilation_cache_test turns it on itself.
os.environ.setdefault("FCN_JAX_COMPILATION_CACHE_DIR", "")
