"""JAX's persistent compilation cache as the commands set it up."""

import json
import os
import subprocess
import sys

import pytest

from fcn_jax import compilation_cache
from fcn_jax import default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles a small function after the commands' start-up of the cache, and
# prints how many cache hits and misses JAX recorded and the files written.
_PROBE = """
import json, os, sys
from fcn_jax import cli
cli.start("default", multi_process=False, compilation_cache_dir=sys.argv[1])
import jax, jax.numpy as jnp
from jax._src import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8))).block_until_ready()
print(json.dumps({
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
    "files": len(os.listdir(sys.argv[1]))}))
"""


def _probe(directory):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  env.pop(compilation_cache.ENV_VAR, None)
  done = subprocess.run([sys.executable, "-c", _PROBE, str(directory)],
                        env=env, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_second_process_reuses_the_entries_of_the_first(tmp_path):
  cache = tmp_path / "cache"
  first, _ = _probe(cache)
  assert first["hits"] == 0 and first["misses"] >= 1
  assert first["files"] >= first["misses"]  # Every program stored.
  second, stderr = _probe(cache)
  if second["hits"] == 0 and "Target machine feature" in stderr:
    pytest.skip("this host's XLA:CPU rejects its own cache entries (JAX "
                "issue 38445)")
  assert second["hits"] == first["misses"] and second["misses"] == 0


def test_default_directory_and_off(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compilation_cache.default_directory() == str(
      tmp_path / "fcn_jax" / "jax_cache")
  assert default_config.get_config().compilation_cache_dir == str(
      tmp_path / "fcn_jax" / "jax_cache")
  monkeypatch.setenv(compilation_cache.ENV_VAR, "")
  assert default_config.get_config().compilation_cache_dir == ""
  assert compilation_cache.configure("") is None
