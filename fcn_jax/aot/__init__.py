"""Ahead-of-time compilation for accelerators this machine does not have.

The library under ``python -m fcn_jax.dry_run``: the real train and eval
steps compiled for a TPU slice (libtpu) or NVIDIA GPUs (the CUDA plugin)
without the devices, measured per device.

- :mod:`~fcn_jax.aot.accelerators`: the tables (TPU slices, GPU models) and
  the topology names the command accepts.
- :mod:`~fcn_jax.aot.targets`: the devices of a topology and what each may
  use; every kind-specific rule is there.
- :mod:`~fcn_jax.aot.measure`: compiling one step and reading its memory and
  FLOPs (:class:`~fcn_jax.aot.measure.StepReport`).
- :mod:`~fcn_jax.aot.steps`: a config's steps, built by training's own
  functions, at the shapes training feeds them.
- :mod:`~fcn_jax.aot.search`: the largest per-device batch that fits.
- :mod:`~fcn_jax.aot.report`: what the command prints and writes.
"""

from __future__ import annotations

from fcn_jax import errors

GIB = 1 << 30


class DryRunError(errors.UserError):
  """Bad input for the dry run; the message names the flag and the fix."""


def gib(num_bytes: float) -> str:
  """Bytes for people: MiB below a tenth of a GiB, else GiB."""
  if abs(num_bytes) < GIB / 10:
    return f"{num_bytes / (1 << 20):.1f} MiB"
  return f"{num_bytes / GIB:.2f} GiB"
