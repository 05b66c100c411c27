"""Data parallelism: the only module that knows how steps are replicated.

Step functions are written for one device's shard of the batch and use the
collectives below (:func:`pmean`, :func:`psum`, :func:`device_index`) over one
named axis. :func:`replicate_step` runs them data-parallel in one of two ways
(``config.parallel``), with the same inputs and outputs:

* ``"pmap"`` (the default): ``jax.pmap`` in the Flax ImageNet idiom. The train
  state is passed unreplicated (``in_axes=None``) and returned replicated
  (``out_axes=None``), batches are split along a leading device axis, and
  reduced outputs come back as single values.
* ``"jit"``: ``jax.jit`` of ``jax.shard_map`` over one global
  ``Mesh(devices, ("data",))``. The state is replicated by
  ``NamedSharding(mesh, P())``; a batch is one global array (built with
  ``jax.make_array_from_process_local_data`` from each host's share) in the
  same ``[devices, per-device batch, ...]`` layout, split over the mesh.

Host helpers: fetching replicated values to NumPy, and checking that the
processes' replicas agree (:func:`fingerprint`,
:func:`check_same_across_processes`). (Multi-process start-up is in
:mod:`fcn_jax.distributed`.)
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Sequence

from absl import logging
import jax
from jax import lax
from jax.experimental import multihost_utils
import numpy as np

from fcn_jax import distributed
from fcn_jax import errors

AXIS_NAME = "data"
# How steps are parallelised (config.parallel): see the module docstring.
MODES = ("pmap", "jit")
# Donate the train state on CPUs too (jaxlib 0.10 supports it there; it saves
# allocating and first touching a new state every step, benchmarks/README.md).
DONATE_ON_CPU = True


# --------------------------------------------------------------------------
# Collectives, for use inside wrapped step functions.
# --------------------------------------------------------------------------


def pmean(tree: Any) -> Any:
  """Mean over the devices of the data-parallel axis."""
  return lax.pmean(tree, AXIS_NAME)


def psum(tree: Any) -> Any:
  """Sum over the devices of the data-parallel axis."""
  return lax.psum(tree, AXIS_NAME)


def device_index() -> jax.Array:
  """This device's index along the data-parallel axis (over all hosts)."""
  return lax.axis_index(AXIS_NAME)


def device_count_in_step() -> int:
  """The number of devices along the data-parallel axis (a static int)."""
  return lax.psum(1, AXIS_NAME)


# --------------------------------------------------------------------------
# Processes and devices.
# --------------------------------------------------------------------------


def is_main_process() -> bool:
  """Whether this process writes logs, metrics and checkpoint metadata."""
  return jax.process_index() == 0


def devices_for_batch(global_batch_size: int, what: str = "batch_size"
                      ) -> list[jax.Device]:
  """The local devices a global batch is split over.

  Every example of a step must have the same shape on every device, so a
  host's batch is split evenly. On one host, a batch that the local devices do
  not divide (e.g. the reference batch of 1) runs on the largest number of
  devices that divides it; with several hosts the batch must divide evenly.

  Args:
    global_batch_size: Examples per step over all hosts.
    what: The config field, for error messages.

  Returns:
    The local devices to use.
  """
  count = jax.process_count()
  if global_batch_size < count or global_batch_size % count:
    raise errors.UserError(
        f"config.{what}={global_batch_size} must be a multiple of the number "
        f"of processes ({count}).")
  local_batch = global_batch_size // count
  local = jax.local_devices()
  if count > 1 and local_batch % len(local):
    raise errors.UserError(
        f"config.{what}={global_batch_size} gives {local_batch} examples per "
        f"host, which the {len(local)} local devices do not divide; use a "
        f"multiple of {count * len(local)}.")
  used = math.gcd(local_batch, len(local))
  if used < len(local):
    logging.warning(
        "%s=%d: using %d of the %d local devices (the batch must split evenly "
        "over devices).", what, global_batch_size, used, len(local))
  return local[:used]


# --------------------------------------------------------------------------
# Wrapping steps and moving data.
# --------------------------------------------------------------------------


def replicate_step(step_fn: Callable[..., tuple[Any, ...]],
                   devices: Sequence[jax.Device], *,
                   per_device_outputs: Sequence[bool],
                   donate_state: bool = False,
                   mode: str = "pmap") -> Callable[..., Any]:
  """Runs ``step_fn(state, batch)`` data-parallel over ``devices``.

  Args:
    step_fn: ``(state, batch) -> tuple of outputs``, written for one device's
      shard of the batch; it reduces with :func:`pmean` / :func:`psum`.
    devices: Devices from :func:`devices_for_batch` (with several processes,
      every device of every process is used), or any devices to compile for
      (e.g. a TPU topology's, see :mod:`fcn_jax.dry_run`).
    per_device_outputs: One flag per output of ``step_fn``: False for outputs
      that are identical on every device (the new state, reduced metrics;
      returned once), True for per-device outputs (returned with a leading
      device axis, see :func:`unshard`).
    donate_state: Reuse the state's buffers for the new state (on CPUs only
      with :data:`DONATE_ON_CPU`, and one process).
    mode: ``"pmap"`` or ``"jit"`` (see the module docstring).

  Returns:
    A compiled function ``(state, sharded_batch) -> outputs``: ``state`` on
    the host or replicated, the batch from :func:`shard`. Its ``lower(state,
    batch)`` takes the same arguments, or ``jax.ShapeDtypeStruct`` trees of
    their shapes, to compile ahead of time.

  Raises:
    errors.UserError: An unknown ``mode``.
  """
  check_mode(mode)
  # Several CPU processes (the multi-host tests) do not donate: there a
  # donated replicated state came back deleted in jaxlib 0.10.2.
  donate = donate_state and (devices[0].platform != "cpu" or (
      DONATE_ON_CPU and jax.process_count() == 1))
  if mode == "jit":
    if not hasattr(jax, "shard_map"):
      raise errors.UserError(
          f"config.parallel='jit' needs jax.shard_map, which jax "
          f"{jax.__version__} lacks: upgrade jax, or use "
          f"config.parallel='pmap'.")
    step = ShardedStep(step_fn, data_mesh(devices), per_device_outputs,
                       donate_state=donate)
  else:
    step = jax.pmap(
        step_fn, axis_name=AXIS_NAME, in_axes=(None, 0),
        out_axes=tuple(0 if d else None for d in per_device_outputs),
        # Multi-host pmap runs over every device of every host.
        devices=None if jax.process_count() > 1 else devices,
        donate_argnums=(0,) if donate else ())
  if jax.process_count() > 1:  # Every program starts on all hosts together.
    step = distributed.MeetAtFirstRun(
        step, getattr(step_fn, "func", step_fn).__name__)
  return step


def check_mode(mode: str) -> None:
  """Raises :class:`fcn_jax.errors.UserError` unless ``mode`` is one of
  :data:`MODES`."""
  if mode not in MODES:
    raise errors.UserError(
        f"config.parallel must be one of {MODES}, got {mode!r}")


def data_mesh(devices: Sequence[jax.Device]) -> jax.sharding.Mesh:
  """The 1-D mesh ``("data",)`` of a step: ``devices``, or every device.

  With several processes the mesh holds every device of every process,
  process by process, so that each host's share of a batch is one contiguous
  block of the global batch (as with multi-host pmap).
  """
  if jax.process_count() > 1:
    devices = jax.devices()
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return jax.sharding.Mesh(np.asarray(devices), (AXIS_NAME,))


class ShardedStep:
  """``jit(shard_map(step_fn))`` over a mesh, called as a pmapped step is.

  The state (and any other first argument) is replicated by
  ``NamedSharding(mesh, P())``; the batch is a global array ``[devices, b,
  ...]`` split over the mesh axis, and each device's step sees its ``[b,
  ...]`` block, as under pmap. Host values are placed on the call, so the
  caller passes what it passes to the pmapped step.
  """

  def __init__(self, step_fn: Callable[..., tuple[Any, ...]],
               mesh: jax.sharding.Mesh, per_device_outputs: Sequence[bool], *,
               donate_state: bool = False):
    spec = jax.sharding.PartitionSpec
    self.mesh = mesh
    self._replicated = jax.sharding.NamedSharding(mesh, spec())
    self._split = jax.sharding.NamedSharding(mesh, spec(AXIS_NAME))
    per_device_outputs = tuple(per_device_outputs)

    def per_device(state, batch):
      outputs = step_fn(state, jax.tree_util.tree_map(lambda x: x[0], batch))
      return tuple(
          jax.tree_util.tree_map(lambda x: x[None], out) if split else out
          for out, split in zip(outputs, per_device_outputs))

    # check_vma=False keeps pmap's autodiff: the gradient of the replicated
    # state is this device's own, and the step reduces it with pmean. (With
    # the check on, JAX would also psum it in the transpose: N times the
    # gradient.)
    mapped = jax.shard_map(
        per_device, mesh=mesh, in_specs=(spec(), spec(AXIS_NAME)),
        out_specs=tuple(spec(AXIS_NAME) if split else spec()
                        for split in per_device_outputs),
        check_vma=False)
    self._step = jax.jit(
        mapped, in_shardings=(self._replicated, self._split),
        out_shardings=tuple(self._split if split else self._replicated
                            for split in per_device_outputs),
        donate_argnums=(0,) if donate_state else ())

  def __call__(self, state: Any, batch: Any) -> tuple[Any, ...]:
    return self._step(self._place(state, self._replicated),
                      self._place(batch, self._split))

  def lower(self, state: Any, batch: Any) -> jax.stages.Lowered:
    """Lowers for the call's arguments (placed as the call places them), or
    for ``jax.ShapeDtypeStruct`` s of the global shapes."""
    return self._step.lower(self._place(state, self._replicated),
                            self._place(batch, self._split))

  def _place(self, tree: Any, sharding: jax.sharding.NamedSharding) -> Any:
    """Global arrays with ``sharding`` from host or device values."""
    split = sharding == self._split

    def place(x):
      if isinstance(x, jax.ShapeDtypeStruct):
        return x
      if isinstance(x, jax.Array):
        if x.sharding == sharding or not x.is_fully_addressable:
          return x
        if jax.process_count() == 1:
          return jax.device_put(x, sharding)
      x = np.asarray(x)
      # This host's share: its devices' blocks of the batch, or all of a
      # replicated value.
      shape = (self.mesh.size,) + x.shape[1:] if split else x.shape
      return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree_util.tree_map(place, tree)


def replicate(tree: Any, devices: Sequence[jax.Device]) -> Any:
  """Places a copy of ``tree`` on every device, as replicated step outputs are.

  The copy never shares memory with ``tree``'s arrays, so a step that donates
  its state leaves the caller's arrays intact.

  Passing the initial state in this form avoids a second compilation of the
  step for host inputs. With several processes the tree is returned as it is
  as copies (a multi-host step takes host values, and compiles once either
  way).
  """
  # Each device array is copied: device_put may alias a device array's buffer
  # in the result, and the step donates (deletes) it; and one array may stand
  # at two places of the tree (a cached zero), which a donating step must not
  # receive twice. (Array.copy also copies typed PRNG keys.)
  tree = jax.tree_util.tree_map(
      lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)
  if jax.process_count() > 1:
    return tree
  return jax.device_put(tree, jax.sharding.NamedSharding(
      data_mesh(devices), jax.sharding.PartitionSpec()))


def shard(batch: Any, num_devices: int,
          keys: Sequence[str] | None = None) -> Any:
  """Splits host arrays ``[local_batch, ...]`` into ``[devices, b, ...]``.

  Args:
    batch: A tree of host arrays.
    num_devices: The step's local devices.
    keys: Only these entries of a dict ``batch`` (those present), the arrays
      a step reads.
  """
  if keys is not None:
    batch = {k: batch[k] for k in keys if k in batch}

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % num_devices:
      raise ValueError(
          f"a host batch of {x.shape[0]} examples cannot be split over "
          f"{num_devices} devices")
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

  return jax.tree_util.tree_map(split, batch)


def unshard(x: Any) -> np.ndarray:
  """Fetches a per-device output ``[devices, b, ...]`` as ``[devices*b, ...]``.

  Only this process's devices' blocks, in order (all of them on one host).
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
    x = np.concatenate([np.asarray(s.data) for s in shards])
  x = np.asarray(x)
  return x.reshape((-1,) + x.shape[2:])


def to_host(tree: Any) -> Any:
  """Fetches replicated (or host) values as NumPy arrays (0-d for scalars)."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _leaf_digests(tree: Any) -> tuple[list[str], np.ndarray]:
  """Leaf paths and 64-bit digests of path, dtype, shape and bytes.

  Returns:
    ``(paths, digests)`` with ``digests`` uint32 ``[num_leaves, 2]`` (JAX
    without x64 cannot gather 64-bit integers).
  """
  paths, digests = [], []
  for path, leaf in jax.tree_util.tree_leaves_with_path(to_host(tree)):
    leaf = np.ascontiguousarray(leaf)
    digest = hashlib.blake2b(digest_size=8)
    name = jax.tree_util.keystr(path)
    digest.update(f"{name}|{leaf.dtype.str}|{leaf.shape}|".encode())
    digest.update(leaf.reshape(-1).view(np.uint8))
    paths.append(name)
    digests.append(np.frombuffer(digest.digest(), np.uint32))
  return paths, np.asarray(digests, np.uint32).reshape(-1, 2)


def fingerprint(tree: Any) -> str:
  """A 16-hex-digit digest of a tree's structure, dtypes, shapes and values.

  Equal trees give equal fingerprints; any changed bit changes it (up to
  hash collisions). Logged with each checkpoint, so that runs (and
  processes) can be compared from their logs.
  """
  _, digests = _leaf_digests(tree)
  return hashlib.blake2b(digests.tobytes(), digest_size=8).hexdigest()


def check_same_across_processes(tree: Any, what: str) -> None:
  """Raises if the processes hold different values of a replicated tree.

  Data-parallel replicas stay identical only if every process ran the same
  program on its share of the same global batch; checkpoints store process
  0's copy only, so a divergence would otherwise go unnoticed. Costs one hash
  of the tree per process and a gather of 8 bytes per leaf; a no-op on one
  process.

  Args:
    tree: Replicated (or host) values, the same structure on every process.
    what: What they are, for the error message.

  Raises:
    RuntimeError: Some leaves differ; the message names them.
  """
  if jax.process_count() == 1:
    return
  paths, digests = _leaf_digests(tree)
  gathered = np.asarray(multihost_utils.process_allgather(digests))
  differ = np.any(gathered != gathered[:1], axis=(0, 2))
  if differ.any():
    names = [p for p, d in zip(paths, differ) if d]
    raise RuntimeError(
        f"The {what} differ across the {jax.process_count()} processes in "
        f"{len(names)} of {len(paths)} arrays ({', '.join(names[:5])}"
        f"{', ...' if len(names) > 5 else ''}): the replicas have diverged "
        "(different code, config or data on some host, or a "
        "non-deterministic collective).")


def all_processes(flag: bool) -> bool:
  """Whether ``flag`` is true on every process (a gather; ``flag`` itself on
  one host). Every process must call it."""
  if jax.process_count() == 1:
    return bool(flag)
  gathered = multihost_utils.process_allgather(np.asarray(bool(flag)))
  return bool(np.all(gathered))
