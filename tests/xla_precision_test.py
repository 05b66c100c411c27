"""What XLA:CPU's default flags cost in precision (fcn_jax.xla_flags).

The suite runs under the flags every command sets (``tests/conftest.py``).
This test measures, each in a fresh process, the float32 weight gradients of
VGG16's early convolutions of a narrow FCN-8s (48x64 input, summed loss)
against a float64 reference, once with those flags and once with XLA's own
defaults, prints both and holds each to float32's accuracy. Run as a script
it prints the measurement under whatever ``XLA_FLAGS`` it is given, e.g. at
full width: ``python tests/xla_precision_test.py 1``.

What it found (jaxlib 0.10.2, this project's 2-core AMD EPYC machine,
2026-12-07, README "XLA:CPU flags"): no consistent precision cost of the
defaults. At widths / 8 both give ~5e-7; at / 4 and / 2 the defaults ~4e-6
and the tuned flags ~7e-7; at full width the defaults ~5e-6 and the tuned
flags ~2e-4.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
# At WIDTH_DIVISOR both flag sets give ~5e-7; 1e-4 leaves room for other
# jaxlibs and still fails a reduced-precision kernel (bfloat16-like, ~1e-2).
TOLERANCE = 1e-4
WIDTH_DIVISOR = 8  # Fast (~10 s a process); the script takes another.


def measure(width_divisor: int = WIDTH_DIVISOR, height: int = 48,
            width: int = 64) -> dict[str, float]:
  """Relative error of each early layer's float32 weight gradient.

  ``max |g32 - g64| / max |g64|`` per kernel, where ``g64`` is the gradient
  of the same net, parameters and data in float64.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import numpy as np
  from fcn_jax.models import losses
  sys.path.insert(0, str(REPO))
  from tests.tiny_fcn import tiny_fcn
  # pylint: enable=g-import-not-at-top

  model, variables = tiny_fcn("fcn8s", width_divisor=width_divisor, seed=0)
  rng = np.random.default_rng(0)
  images = rng.normal(0, 50, (1, height, width, 3))
  labels = rng.integers(0, 21, (1, height, width))

  def grads(dtype):
    # float64 reference: the same module computing in float64 (its logits
    # are returned in float32 only by the last cast, whose rounding is far
    # below the errors measured here).
    net = model.clone(dtype=dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype),
                          variables["params"])

    def loss(p):
      logits = net.apply({"params": p}, jnp.asarray(images, dtype))
      return losses.weighted_loss_sum(logits, jnp.asarray(labels),
                                      jnp.ones(labels.shape, jnp.float32))

    return jax.jit(jax.grad(loss))(params)

  g32, g64 = grads(jnp.float32), grads(jnp.float64)
  errors = {}
  for layer in LAYERS:
    ref = np.asarray(g64[layer]["kernel"], np.float64)
    got = np.asarray(g32[layer]["kernel"], np.float64)
    errors[layer] = float(np.abs(got - ref).max() / np.abs(ref).max())
  return errors


def _measure_in_process(flags: str) -> dict[str, float]:
  """:func:`measure` in a fresh process whose ``XLA_FLAGS`` are ``flags``
  (not this process's: the flags apply when a backend starts)."""
  from fcn_jax import xla_flags  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS=flags)
  env.pop(xla_flags.ENV_VAR, None)
  result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_float32_gradients_with_the_commands_flags_and_with_xla_defaults():
  from fcn_jax import xla_flags  # pylint: disable=g-import-not-at-top
  results = {"XLA defaults": _measure_in_process("")}
  if xla_flags.flags_supported(xla_flags.TUNED_CPU_FLAGS):
    results["tuned"] = _measure_in_process(xla_flags.TUNED_CPU_FLAGS)
  # Shown with -s and in a failure's message.
  report = f"relative float32 gradient error vs float64: {results}"
  print(report)
  for errors in results.values():
    assert sorted(errors) == sorted(LAYERS), report
    assert 0 < max(errors.values()) < TOLERANCE, report


if __name__ == "__main__":
  print(json.dumps(measure(*(int(a) for a in sys.argv[1:2]))))
