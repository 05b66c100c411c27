"""Ctrl-C during a training: the first saves and stops, the second exits.

Python's default turns Ctrl-C (SIGINT) into a ``KeyboardInterrupt`` that
unwinds the training wherever it is: a long traceback, and every step since
the last checkpoint lost. A training treats the first Ctrl-C like a SIGTERM
(a preemption, :class:`fcn_jax.distributed.PreemptionWatcher`): it finishes
the step, saves a checkpoint of it and returns. A second Ctrl-C exits at
once, without saving (the workdir resumes from its last checkpoint).

Python runs signal handlers on the main thread between bytecodes, so a
Ctrl-C during a long call into XLA (a compilation) takes effect when it
returns.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

from absl import logging

from fcn_jax import distributed

EXIT_STATUS = 128 + signal.SIGINT  # What a shell reports for a Ctrl-C.


class CtrlC:
  """Handles SIGINT while a training runs (on the main thread only).

  On one process the first Ctrl-C sets :meth:`requested`, which the loop
  reads at each step with the preemption watcher's. On several processes it
  sends this process a SIGTERM, so that JAX's preemption sync service picks
  one step at which every process saves and stops.

  Args:
    on_exit: Called before a second Ctrl-C ends the process (releases the
      workdir's lock); must be quick and must not raise.
  """

  def __init__(self, on_exit: Callable[[], None] = lambda: None):
    self._on_exit = on_exit
    self._requested = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._on_sigint)

  def _on_sigint(self, signum, frame) -> None:
    del signum, frame
    if not self._requested.is_set():
      self._requested.set()
      logging.warning("Ctrl-C: finishing this step, saving a checkpoint and "
                      "exiting (Ctrl-C again exits at once, without saving).")
      if distributed.is_multiprocess():
        os.kill(os.getpid(), signal.SIGTERM)
      return
    logging.warning("Ctrl-C again: exiting now, without saving; rerunning the "
                    "same command resumes from the last checkpoint.")
    try:
      self._on_exit()
    finally:
      sys.stderr.flush()
      os._exit(EXIT_STATUS)  # pylint: disable=protected-access

  def requested(self) -> bool:
    """Whether a Ctrl-C asked this (single) process to save and stop."""
    return self._requested.is_set() and not distributed.is_multiprocess()

  def close(self) -> None:
    """Restores the previous SIGINT handler."""
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
      self._previous = None
