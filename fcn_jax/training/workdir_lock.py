"""One writer per training workdir: ``WORKDIR/workdir.lock``.

The lock belongs to the training workdir (the training and an evaluation
that writes its report there take it), not to the checkpoint formats: a
read-only load (``predict``, ``export``, ``evaluate --output``) never needs it.

Every change of the lock file (creating it, taking over a stale one,
removing it) is made while holding a short-lived mutex, the file
``workdir.lock.takeover`` created with ``O_EXCL``: of several runs that find
the lock free or stale at the same instant exactly one takes it; the others
then see a live holder and are refused. The lock's content is written to a
temporary file and renamed into place, so a lock file is always whole; an
unreadable one (empty or not JSON, as a full disk or an older version may
leave it) is judged by its age, like the lock of another host.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Mapping

from absl import logging
import jax

from fcn_jax import errors
from fcn_jax import parallel

LOCK_FILE = "workdir.lock"
MUTEX_SUFFIX = ".takeover"
# A lock that cannot be checked by its PID (another host's, or an unreadable
# file) is stale once nobody has refreshed it for this long (the holder
# touches it every LOCK_HEARTBEAT_S seconds).
LOCK_HEARTBEAT_S = 60.0
LOCK_STALE_AFTER_S = 10 * 60.0
# The mutex is held for the milliseconds of one read and one rename; one this
# old was left by a process killed while holding it.
MUTEX_STALE_AFTER_S = 60.0
# How long to wait for another run's take-over to finish.
MUTEX_WAIT_S = 20.0


class WorkdirLockedError(errors.UserError, OSError):
  """Another run (alive, or of another host and recently refreshed) holds
  the workdir, or the lock file cannot be written."""


def _process_start_ticks(pid: int) -> int | None:
  """The start time of process ``pid`` in clock ticks since boot (Linux's
  /proc), which tells a live holder from a new process that reuses its
  PID; None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_alive(pid: int, start_ticks: int | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Alive, another user's.
  if start_ticks is not None:
    now = _process_start_ticks(pid)
    if now is not None and now != start_ticks:
      return False  # The PID was reused by another process.
  return True


def _describe_holder(holder: Mapping[str, Any]) -> str:
  return (f"{holder.get('command', '?')} (PID {holder.get('pid', '?')} on "
          f"host {holder.get('host', '?')}, since {holder.get('since', '?')})")


def _age_s(path: str) -> float | None:
  """Seconds since ``path`` was last modified; None if it is gone."""
  try:
    return time.time() - os.path.getmtime(path)
  except OSError:
    return None


class WorkdirLock:
  """One writer per workdir: the lock file ``WORKDIR/workdir.lock``.

  The lock is a JSON file naming its holder: the command, host, PID (and its
  start time, to see PID reuse) and since when. A second run on the workdir
  is refused (:class:`WorkdirLockedError`) before it writes anything. A lock
  left by a run that died (SIGKILL, a crash, a lost machine) is *stale* and
  taken over with a warning:

  * same host: its process no longer exists (or its PID now belongs to a
    process started later);
  * another host, or an unreadable file: it cannot be asked, so the holder
    refreshes the file's modification time every :data:`LOCK_HEARTBEAT_S`
    seconds and a lock not refreshed for :data:`LOCK_STALE_AFTER_S` seconds
    is stale (a run whose file system stalls that long loses its lock).

  On a multi-process run process 0 takes the lock for the whole run and the
  others follow its verdict (a gather), so all processes start or all
  refuse. The lock is released (the file removed, if it is still ours) by
  :meth:`release`, which the training calls on every exit path; a SIGKILL
  leaves a stale lock, taken over by the next run.

  Args:
    workdir: The workdir (created if missing).
    command: What holds it, for the message another run prints.
    if_held: What a refused run should do instead (the end of its message).
  """

  def __init__(self, workdir: str, command: str | None = None, *,
               if_held: str = "wait for it to end, or give another --workdir"):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._mutex = self.path + MUTEX_SUFFIX
    self._command = command or " ".join(sys.argv[:1]) or "python"
    self._if_held = if_held
    self._token = uuid.uuid4().hex
    self._held = False
    self._stop = threading.Event()
    self._heartbeat = None

  def _content(self) -> dict[str, Any]:
    return {"command": self._command, "host": socket.gethostname(),
            "pid": os.getpid(), "pid_start": _process_start_ticks(os.getpid()),
            "processes": jax.process_count(), "token": self._token,
            "since": datetime.datetime.now().astimezone().isoformat(
                timespec="seconds")}

  def _read_holder(self) -> dict[str, Any] | None:
    """The current holder, ``{}`` for an unreadable file (empty or garbage),
    None when there is no lock."""
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def _stale(self, holder: Mapping[str, Any]) -> str | None:
    """Why the lock of ``holder`` is stale, or None if it is held."""
    age = _age_s(self.path)
    if age is None:
      return "it was just released"
    if holder.get("host") == socket.gethostname() and isinstance(
        holder.get("pid"), int):
      if not _pid_alive(holder["pid"], holder.get("pid_start")):
        return f"process {holder['pid']} no longer runs"
      return None
    if age > LOCK_STALE_AFTER_S:
      what = ("it is unreadable (empty or not JSON, as a full disk leaves "
              "it) and" if not holder else "it")
      return (f"{what} was last refreshed {age / 60:.0f} min ago (a live "
              f"holder refreshes it every {LOCK_HEARTBEAT_S:.0f} s)")
    return None

  def _locked_error(self, holder: Mapping[str, Any]) -> WorkdirLockedError:
    workdir = os.path.dirname(self.path)
    if not holder:
      return WorkdirLockedError(
          f"the workdir {workdir} is locked by {self.path}, which is "
          f"unreadable (empty or not JSON) and was modified "
          f"{_age_s(self.path) or 0:.0f} s ago; it is taken over once "
          f"nobody has modified it for {LOCK_STALE_AFTER_S / 60:.0f} min: "
          f"{self._if_held} (if no run uses the workdir, delete {self.path})")
    return WorkdirLockedError(
        f"the workdir {workdir} is in use by {_describe_holder(holder)}; one "
        f"run writes a workdir at a time: {self._if_held} (if that run is "
        f"dead on another host, delete {self.path})")

  # The mutex: every change of the lock file is made holding it.

  def _try_mutex(self) -> bool:
    try:
      os.close(os.open(self._mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                       0o644))
      return True
    except FileExistsError:
      pass
    try:
      stat = os.stat(self._mutex)
    except FileNotFoundError:
      return False  # Released meanwhile: the caller tries again.
    if time.time() - stat.st_mtime > MUTEX_STALE_AFTER_S:
      # Left by a process killed during a take-over. Move it aside and check
      # that it is the one judged (not a new one of a run just starting).
      aside = f"{self._mutex}-{self._token}"
      try:
        os.rename(self._mutex, aside)
      except FileNotFoundError:
        return False
      if (os.stat(aside).st_ino, os.stat(aside).st_mtime) != (
          stat.st_ino, stat.st_mtime):
        try:
          os.link(aside, self._mutex)  # Put the live one back.
        except FileExistsError:
          pass
      else:
        logging.warning("Removed %s, left by a run killed while it took the "
                        "lock %d s ago.", self._mutex,
                        time.time() - stat.st_mtime)
      os.remove(aside)
    return False

  def _take_mutex(self, wait_s: float = MUTEX_WAIT_S) -> bool:
    deadline = time.monotonic() + wait_s
    while not self._try_mutex():
      if time.monotonic() > deadline:
        return False
      time.sleep(0.005)
    return True

  def _drop_mutex(self) -> None:
    try:
      os.remove(self._mutex)
    except FileNotFoundError:
      pass

  def _write_lock(self) -> None:
    """Writes the lock whole: a temporary file renamed over the path."""
    tmp = f"{self.path}.{self._token}.tmp"
    try:
      with open(tmp, "w") as f:
        json.dump(self._content(), f, indent=2)
      os.replace(tmp, self.path)
    except OSError as e:
      try:
        os.remove(tmp)
      except OSError:
        pass
      raise WorkdirLockedError(
          f"cannot write the lock {self.path} ({e.strerror or e}): free "
          "space or fix the file system, then rerun") from None

  def _acquire_here(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    if not self._take_mutex():
      raise WorkdirLockedError(
          f"another run has been taking the lock {self.path} for "
          f"{MUTEX_WAIT_S:.0f} s; one run writes a workdir at a time: "
          f"{self._if_held} (if no run uses the workdir, delete "
          f"{self._mutex})")
    try:
      holder = self._read_holder()
      reason = None
      if holder is not None:
        reason = self._stale(holder)
        if reason is None:
          raise self._locked_error(holder)
      self._write_lock()
      if reason is not None:
        logging.warning("Took over the stale lock %s of %s: %s.", self.path,
                        _describe_holder(holder) if holder
                        else "an unknown run", reason)
    finally:
      self._drop_mutex()

  def acquire(self) -> "WorkdirLock":
    """Takes the lock (process 0; the others follow its verdict).

    Raises:
      WorkdirLockedError: Another run holds it (on every process).
    """
    error = None
    if jax.process_index() == 0:
      try:
        self._acquire_here()
        self._held = True
      except WorkdirLockedError as e:
        error = e
    if jax.process_count() > 1:
      ok = parallel.all_processes(error is None)
      if not ok and error is None:
        self.release()
        error = WorkdirLockedError(
            f"process 0 could not take the lock {self.path} (its log says "
            "which run holds the workdir)")
    if error is not None:
      raise error
    if self._held:
      self._heartbeat = threading.Thread(target=self._refresh, daemon=True,
                                         name="workdir-lock-heartbeat")
      self._heartbeat.start()
    return self

  @property
  def held(self) -> bool:
    return self._held

  def _refresh(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    """Removes the lock file if this run still holds it. Idempotent; never
    raises (it runs on every exit path, often after another error)."""
    self._stop.set()
    if not self._held:
      return
    self._held = False
    # A short wait: a run stopping must not hang on another's take-over.
    mutex = self._take_mutex(wait_s=2.0)
    try:
      holder = self._read_holder()
      if holder and holder.get("token") == self._token:
        os.remove(self.path)
    except OSError as e:
      logging.warning("Could not remove the lock %s (%s); the next run takes "
                      "it over.", self.path, e)
    finally:
      if mutex:
        self._drop_mutex()

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc_info: Any) -> None:
    self.release()
