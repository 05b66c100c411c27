"""The saved position of the training input pipeline, across process counts.

Each process saves its grain iterator's state with the training checkpoint
(``grain.checkpoint.CheckpointSave``) as ``<folder>/process_<k>-of-<n>.json``.
The state counts *global* batches (host ``k`` takes its part of every global
batch of one global sequence, :class:`fcn_jax.data.sampling.HostSlice`,
before batching), so the ``n`` states of one step are equal and any new
host, whatever the new count, continues from that same position with its
own slice. :func:`position_for` reads that position when the process count
changed; with the same count grain restores its own file.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from absl import logging

from fcn_jax import errors

_STATE_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


class MissingPositionError(errors.UserError):
  """The saved position is missing, incomplete or unreadable (a damaged
  checkpoint)."""


class DisagreeingPositionsError(errors.UserError):
  """The processes saved different positions: not one this code can
  continue from on another process count."""


def _one_line(error: BaseException) -> str:
  return f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"


def position_for(folder: str, index: int, count: int) -> dict[str, Any] | None:
  """The iterator state for process ``index`` of ``count`` to set, or None
  when this process count saved the folder (grain restores its own file).

  Raises:
    MissingPositionError: No state files, an incomplete set, or unreadable
      ones.
    DisagreeingPositionsError: Readable states that disagree.
  """
  if os.path.isfile(os.path.join(folder, f"process_{index}-of-{count}.json")):
    return None
  names = os.listdir(folder) if os.path.isdir(folder) else []
  saved: dict[int, set[int]] = {}
  for name in names:
    match = _STATE_FILE.fullmatch(name)
    if match:
      saved.setdefault(int(match[2]), set()).add(int(match[1]))
  name = os.path.basename(folder)
  if not saved:
    raise MissingPositionError(
        f"it has no {name}/ files (the data iterator's position), so it "
        "cannot be resumed exactly")
  complete = [n for n, ks in saved.items() if ks == set(range(n))]
  if not complete:
    n = max(saved)
    raise MissingPositionError(
        f"its {name}/ holds the positions of processes {sorted(saved[n])} "
        f"of {n}, not all of them")
  saved_count = max(complete)
  states = []
  for k in range(saved_count):
    path = os.path.join(folder, f"process_{k}-of-{saved_count}.json")
    try:
      with open(path) as f:
        states.append(json.load(f))
    except (OSError, ValueError) as e:
      raise MissingPositionError(f"{path}: {_one_line(e)}") from None
  if any(state != states[0] for state in states[1:]):
    raise DisagreeingPositionsError(
        f"was saved by {saved_count} processes at different data positions "
        f"({', '.join(json.dumps(s) for s in states[:3])}); it can be "
        f"resumed only with {saved_count} processes, as it was saved")
  logging.info("%s was saved by %d processes; resuming on %d from the same "
               "global data position %s.", os.path.dirname(folder),
               saved_count, count, json.dumps(states[0]))
  return states[0]
