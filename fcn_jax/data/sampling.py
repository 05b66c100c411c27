"""Which examples, in which order, on which host (grain datasets, no pixels).

* :class:`SampleWithReplacement`: the ``reference`` training sequence, one
  seeded uniform draw per position (``solve.py``, docs/reference.md §5.3).
* :class:`HostSlice` and :func:`global_position`: host ``p`` takes part
  ``p`` of every global batch of one global training sequence, so the
  examples a device sees do not depend on the number of hosts.
* :func:`host_shard_bounds`: each host's contiguous evaluation shard.
* :func:`bucketed_eval_plan`: each host's eval batches at shape buckets.
"""

from __future__ import annotations

import sys
from typing import Sequence

import grain
import numpy as np

from fcn_jax.data import buckets


class SampleWithReplacement(grain.MapDataset):
  """Infinite dataset: element ``i`` is a uniform draw from ``parent``.

  Draw ``i`` is ``np.random.default_rng((seed, 0, i)).integers(n)``:
  independent of every other draw, so random access and checkpointing are
  exact. (The 0 was the host index when each host drew its own stream; it
  keeps single-host draws as they were.)
  """

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    if not len(parent):  # pylint: disable=g-explicit-length-test
      raise ValueError("Cannot sample from an empty dataset.")
    self._seed = seed

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return f"SampleWithReplacement(seed={self._seed})"

  def draw(self, index: int) -> int:
    """The parent index of element ``index``."""
    rng = np.random.default_rng((self._seed, 0, index))
    return int(rng.integers(len(self._parent)))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.draw(index)]


def global_position(host_position: int, global_batch_size: int,
                    local_batch_size: int, process_index: int) -> int:
  """Where a host's ``host_position``-th training example is globally.

  Host ``p`` takes examples ``[p * local, (p + 1) * local)`` of every global
  batch of ``global_batch_size = process_count * local`` examples.

  Args:
    host_position: Index in this host's sequence of examples.
    global_batch_size: Examples per step on all hosts together.
    local_batch_size: Examples per step on this host.
    process_index: This host.

  Returns:
    The index in the global sequence.
  """
  batch, offset = divmod(host_position, local_batch_size)
  return (batch * global_batch_size + process_index * local_batch_size
          + offset)


class HostSlice(grain.MapDataset):
  """This host's part of every global batch of ``parent``.

  Element ``k`` is ``parent[global_position(k, ...)]``: batching this
  dataset by ``local_batch_size`` gives host ``process_index`` its slice of
  each global batch of ``parent``, so all hosts together consume
  ``parent`` in order, whatever their number.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int,
               local_batch_size: int, process_index: int):
    super().__init__(parent)
    if global_batch_size % local_batch_size or not (
        0 <= process_index < global_batch_size // local_batch_size):
      raise ValueError(
          f"process {process_index} cannot take {local_batch_size} examples "
          f"of each global batch of {global_batch_size}.")
    self._global = global_batch_size
    self._local = local_batch_size
    self._process = process_index

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __str__(self) -> str:
    return (f"HostSlice(process={self._process}, local={self._local}, "
            f"global={self._global})")

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[global_position(index, self._global, self._local,
                                        self._process)]


def host_shard_bounds(num_examples: int, process_index: int,
                      process_count: int) -> tuple[int, int]:
  """``[start, end)`` of this host's contiguous shard; sizes differ by <= 1."""
  start = num_examples * process_index // process_count
  end = num_examples * (process_index + 1) // process_count
  return start, end


def bucketed_eval_plan(sizes: np.ndarray, bucket_list: Sequence[tuple[int, int]],
                       global_batch_size: int, local_batch_size: int,
                       process_index: int) -> tuple[np.ndarray, np.ndarray]:
  """Which examples each eval batch of this host holds, bucket by bucket.

  Every example is evaluated once, at its smallest fitting bucket: the
  examples of each bucket (in split order) are cut into global batches of
  ``global_batch_size``, the last one filled with padding (-1); host ``p``
  takes part ``p`` of every global batch, as in training. Every host computes
  the same plan from the sizes table, so all run the same bucket at every
  step without communicating, and all yield the same number of batches.

  Args:
    sizes: ``[n, 2]`` (height, width) of the split's examples.
    bucket_list: The buckets (:mod:`fcn_jax.data.buckets`).
    global_batch_size: Examples per eval step over all hosts.
    local_batch_size: Examples per eval step on this host.
    process_index: This host.

  Returns:
    ``(positions, shapes)``: int64 ``[num_batches, local_batch_size]``
    example indices (-1 = padding) and int ``[num_batches, 2]`` bucket shapes.
  """
  index = buckets.assign(sizes, bucket_list)
  if (index < 0).any():
    raise ValueError("some images fit no bucket")
  positions, shapes = [], []
  offset = process_index * local_batch_size
  for b, shape in enumerate(bucket_list):
    members = np.flatnonzero(index == b)
    for start in range(0, len(members), global_batch_size):
      chunk = np.full(global_batch_size, -1, np.int64)
      part = members[start:start + global_batch_size]
      chunk[:len(part)] = part
      positions.append(chunk[offset:offset + local_batch_size])
      shapes.append(shape)
  return (np.asarray(positions, np.int64).reshape(-1, local_batch_size),
          np.asarray(shapes, np.int64).reshape(-1, 2))
