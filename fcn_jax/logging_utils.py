"""Training output: console progress, TensorBoard, JSON lines.

Only process 0 writes; on the other processes every method is a no-op.

* Console: one progress line per logging interval (step, loss, images/s, ETA)
  through absl logging, and progress bars for commands.
* ``WORKDIR/tensorboard/``: TensorBoard event files (tensorboardX, no
  TensorFlow) with scalars ``train/*`` and ``eval/*`` and validation image
  tiles (image | label | prediction).
* ``WORKDIR/metrics.jsonl``: one JSON object per log or evaluation, e.g.
  ``{"step": 4000, "split": "eval", "mean_iu": 0.63, ...}``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging as std_logging
import math
import os
import sys
import time
import traceback
import uuid
from typing import Any, Iterable, Iterator, Mapping

from absl import logging
import numpy as np

from fcn_jax import errors

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class _Lines:
  """Progress as plain lines, for logs and pipes (no carriage returns or
  escape codes): one line per tenth of the total (per 100 items when the
  total is unknown), and one at the end."""

  def __init__(self, total: int | None, unit: str, desc: str):
    self.total, self.unit, self.desc, self.done = total, unit, desc, 0
    self.shown = 0
    self.start = time.time()

  def _line(self) -> None:
    of_total = f"/{self.total}" if self.total is not None else ""
    print(f"{self.desc}: {self.done}{of_total} {self.unit} "
          f"({time.time() - self.start:.0f} s)", file=sys.stderr, flush=True)
    self.shown = self.done

  def update(self, n: int) -> None:
    self.done += n
    step = max(1, self.total // 10) if self.total else 100
    if self.done // step > self.shown // step:
      self._line()

  def close(self) -> None:
    if self.done != self.shown:
      self._line()


class _Silent:

  def update(self, n: int) -> None:
    del n

  def close(self) -> None:
    pass


def progress_bar(total: int | None, unit: str, desc: str,
                 enabled: bool = True) -> Any:
  """A console progress bar (``update(n)``, ``close()``): tqdm on a
  terminal; plain lines (:class:`_Lines`) when stderr is not one (a log
  file, a pipe) or tqdm is missing; nothing when not ``enabled``."""
  if not enabled:
    return _Silent()
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    tqdm = None
  if tqdm is None or not sys.stderr.isatty():
    return _Lines(total, unit, desc)
  return tqdm.tqdm(total=total, unit=unit, desc=desc)


def track(items: Iterable[Any], unit: str, desc: str,
          enabled: bool = True) -> Iterator[Any]:
  """Yields ``items``, advancing a :func:`progress_bar` by one per item."""
  total = len(items) if hasattr(items, "__len__") else None
  bar = progress_bar(total, unit, desc, enabled)
  try:
    for item in items:
      yield item
      bar.update(1)
  finally:
    bar.close()


def to_json(value: Any) -> Any:
  """Converts NumPy scalars and non-finite floats for strict JSON."""
  if isinstance(value, Mapping):
    return {str(k): to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def write_text(path: str, text: str) -> None:
  """Writes ``path`` atomically: a temporary file beside it, renamed over it
  (a crash or a full disk leaves the old file whole and no temporary one)."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_json(path: str, content: Mapping[str, Any]) -> None:
  """Writes strict JSON (NaN as null) atomically, on process 0 only (the one
  writer of every JSON file fcn_jax keeps)."""
  import jax  # pylint: disable=g-import-not-at-top  # Only for the index.
  if jax.process_index() != 0:
    return
  write_text(path, json.dumps(to_json(dict(content)), indent=2,
                              sort_keys=True, default=str))


def drop_records_after(path: str, step: int) -> int:
  """Rewrites a JSON-lines file without the records of steps after ``step``
  (atomically; a truncated last line, as a crash leaves it, goes too).

  Returns:
    How many lines were dropped.
  """
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # Not a record: a line cut short by a crash.
  dropped = len(lines) - len(kept)
  if dropped:
    write_text(path, "".join(line + "\n" for line in kept))
    logging.info("Dropped %d records after step %d from %s: the resumed run "
                 "writes them again.", dropped, step, path)
  return dropped


class MetricsWriteError(errors.UserError, OSError):
  """The metrics or TensorBoard files could not be written (a full disk, a
  lost file system); the checkpoints are not affected."""


def _import_tensorboardx() -> Any:
  """``tensorboardX``, without the PyTorch import it attempts at load time.

  tensorboardX imports ``torch`` if it is installed (the ``[torch]`` extra),
  only to accept torch tensors as values: 1.8 s of every training start on
  2 CPU cores, for numbers that are never tensors here. A torch the process
  has already imported is left alone.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules["torch"] = None  # type: ignore[assignment]  # ImportError.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return tensorboardX


class MetricWriter:
  """Writes scalars, images and JSON lines to a workdir (process 0 only).

  Args:
    workdir: Output directory.
    enabled: Whether this process writes (``jax.process_index() == 0``).
    resume_step: A training run (re)starting after this step: the records of
      later steps, written by a run that crashed before its next checkpoint
      and about to be replayed, are dropped from ``metrics.jsonl`` and hidden
      in TensorBoard (its ``purge_step``), so each step appears once. None
      (evaluation-only writers): append.
  """

  def __init__(self, workdir: str, enabled: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self._summary = None
    self._jsonl = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      tensorboardX = _import_tensorboardx()
      path = os.path.join(workdir, METRICS_FILE)
      if resume_step is not None:
        drop_records_after(path, resume_step)
      self._summary = tensorboardX.SummaryWriter(
          os.path.join(workdir, TENSORBOARD_DIR),
          purge_step=None if resume_step is None else resume_step + 1)
      self._path = path
      self._jsonl = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                            0o644)

  def _failed(self, error: OSError) -> MetricsWriteError:
    return MetricsWriteError(
        f"could not write the metrics in {os.path.dirname(self._path)} "
        f"({error.strerror or error}); the checkpoints are not affected: "
        "free space or fix the file system, then rerun the same command to "
        "resume")

  def _append_line(self, line: str) -> None:
    """Appends one whole line to metrics.jsonl, or nothing: a write cut
    short (a full disk) is undone, so the file never ends in part of a
    line."""
    data = (line + "\n").encode()
    size = os.fstat(self._jsonl).st_size
    try:
      if os.write(self._jsonl, data) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
      with contextlib.suppress(OSError):
        os.ftruncate(self._jsonl, size)
      raise self._failed(e) from None

  def write_scalars(self, step: int, split: str,
                    scalars: Mapping[str, Any]) -> None:
    """Writes numeric values as ``split/name`` scalars and one JSON line.

    Lists and dicts (e.g. per-class IU) go to the JSON line only.
    """
    if not self.enabled:
      return
    try:
      for name, value in scalars.items():
        if isinstance(value, (int, float, np.number)) and math.isfinite(
            value):
          self._summary.add_scalar(f"{split}/{name}", float(value), step)
    except OSError as e:
      raise self._failed(e) from None
    record = {"step": int(step), "split": split, "time": time.time()}
    record.update(to_json(dict(scalars)))
    self._append_line(json.dumps(record, sort_keys=True))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes uint8 ``[H, W, 3]`` images."""
    if not self.enabled:
      return
    try:
      for name, image in images.items():
        self._summary.add_image(name, np.asarray(image), step,
                                dataformats="HWC")
    except OSError as e:
      raise self._failed(e) from None

  def flush(self) -> None:
    if self.enabled:
      try:
        self._summary.flush()
      except OSError as e:
        raise self._failed(e) from None

  def close(self) -> None:
    """Closes both files (the second even when the first fails)."""
    if self.enabled:
      self.enabled = False
      try:
        self._summary.close()
      except OSError as e:
        raise self._failed(e) from None
      finally:
        os.close(self._jsonl)


class Progress:
  """Formats the console progress line: step, loss, images/s and ETA.

  Args:
    total_steps: The last step of the run.
    images_per_step: Images consumed per step (global batch x iter_size).
    start_step: The step training starts (or resumes) from.
  """

  def __init__(self, total_steps: int, images_per_step: int,
               start_step: int = 0):
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._estimate_from: tuple[int, float] | None = None

  def restart(self, step: int) -> None:
    """Measures rates from now and ``step`` (e.g. after compilation)."""
    self._last_step, self._last_time = step, time.perf_counter()
    self._estimate_from = (step, self._last_time)

  def estimate(self, step: int, measured_steps: int = 3) -> str | None:
    """The time left, logged once: after ``measured_steps`` timed steps
    (counted from :meth:`restart`, i.e. after compilation), the steps left
    times the measured step time. Returns the logged line, else None.

    The caller blocks on the step's result first, so the time is the steps'
    own, not their dispatch.
    """
    if (self._estimate_from is None
        or step - self._estimate_from[0] < measured_steps):
      return None
    first, since = self._estimate_from
    self._estimate_from = None
    seconds_per_step = (time.perf_counter() - since) / (step - first)
    left = (self.total_steps - step) * seconds_per_step
    line = (f"measured {seconds_per_step:.3g} s/step over {step - first} "
            f"steps: about {describe_duration(left)} left for the "
            f"{self.total_steps - step} remaining steps (plus evaluations).")
    logging.info(line)
    return line

  def update(self, step: int, loss: float, learning_rate: float
             ) -> dict[str, float]:
    """Returns the rates since the previous update and logs the line."""
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    seconds = max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    steps_per_second = steps / seconds
    images_per_second = steps_per_second * self.images_per_step
    eta = (self.total_steps - step) / steps_per_second
    logging.info(
        "step %d/%d  loss %.6g  lr %.3g  %.2f img/s  ETA %s", step,
        self.total_steps, loss, learning_rate, images_per_second,
        format_duration(eta))
    return {"steps_per_second": steps_per_second,
            "images_per_second": images_per_second}


# Library messages the user cannot act on, hidden below --verbosity=1 (the
# start of each message): Orbax opening a checkpoint read-only (predict,
# evaluate, export) or saving one without metrics (the steps saved between
# evaluations), and TFDS generating a dataset that has no info file yet.
_LIBRARY_NOISE = (
    "CheckpointManagerOptions.read_only=True",
    "Given directory is read only",
    "Requested `tracked_metric`",
    "Variant folder ",
)


class _NoLibraryNoise(std_logging.Filter):
  """Drops :data:`_LIBRARY_NOISE` (unless ``--verbosity`` >= 1)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if logging.get_verbosity() >= 1:
      return True
    try:
      message = record.getMessage()
    except (TypeError, ValueError):
      return True
    return not message.startswith(_LIBRARY_NOISE)


class _OwnInfoOnly(std_logging.Filter):
  """Keeps warnings and errors from everywhere, INFO only from fcn_jax."""

  def __init__(self):
    super().__init__()
    self._package_dir = os.path.dirname(os.path.abspath(__file__))

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or os.path.abspath(record.pathname).startswith(self._package_dir))


def quiet_library_logs() -> None:
  """Hides the INFO chatter of Orbax, TFDS, grain and JAX on the console,
  and the warnings of theirs that the user cannot act on
  (:data:`_LIBRARY_NOISE`).

  Run with ``--verbosity=1`` to see it again.
  """
  if logging.get_verbosity() >= 1:
    return
  # On absl's logger itself: also where no absl handler is installed (the
  # argparse commands, where Python's last-resort handler prints).
  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _NoLibraryNoise) for f in absl_logger.filters):
    absl_logger.addFilter(_NoLibraryNoise())
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
  """Keeps what a library prints on stdout (TFDS's "Downloading and
  preparing dataset Unknown size ..." although nothing downloads) out of the
  console; it goes to the debug log (``--verbosity=1`` shows it)."""
  if logging.get_verbosity() >= 1:
    yield
    return
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stdout(buffer):
      yield
  finally:
    if buffer.getvalue().strip():
      logging.debug("%s", buffer.getvalue().strip())


def describe_duration(seconds: float) -> str:
  """``42`` -> ``42 s``, ``750`` -> ``13 min``, ``7300`` -> ``2.0 h``."""
  if seconds < 90:
    return f"{max(seconds, 0):.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.0f} min"
  return f"{seconds / 3600:.1f} h"


def format_duration(seconds: float) -> str:
  """``3725`` -> ``1:02:05``."""
  seconds = int(round(max(seconds, 0)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


# --------------------------------------------------------------------------
# Process-wide silencing of asynchronous I/O after-effects.
# --------------------------------------------------------------------------


_EVENT_LOOP_CLOSED = "Event loop is closed"
_quiet_installed = False


def _in_orbax(path: str) -> bool:
  """Whether a source file is Orbax's."""
  return f"{os.sep}orbax{os.sep}" in path


class _OrbaxThreadErrors(std_logging.Filter):
  """Keeps Orbax's background-thread error reports (each with a traceback)
  out of the console: the same error reaches the main thread, which
  reports it in one line. With ``--verbosity=1`` (debug) they are kept, as
  debug records."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if (record.levelno >= std_logging.ERROR and record.exc_info
        and _in_orbax(record.pathname)):
      if not std_logging.getLogger("absl").isEnabledFor(std_logging.DEBUG):
        return False
      record.levelno, record.levelname = std_logging.DEBUG, "DEBUG"
    return True


class _UnretrievedOrbaxTasks(std_logging.Filter):
  """Keeps asyncio's "Task exception was never retrieved" reports of Orbax's
  tasks (a failed write's sibling writes, garbage-collected after the
  failure was raised: each an ``OSError`` with its traceback) out of the
  console; they become debug records."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if (str(record.msg).startswith("Task exception was never retrieved")
        and record.exc_info and isinstance(record.exc_info[1], OSError)
        and any(_in_orbax(frame.filename)
                for frame in traceback.extract_tb(record.exc_info[2]))):
      logging.debug("An Orbax task failed after the failure that was "
                    "reported: %s", record.exc_info[1])
      return False
    return True


def quiet_async_errors() -> None:
  """Keeps the after-effects of a failed asynchronous read or write out of
  the console (once per process); they go to the debug log.

  * When one tensorstore read or write of an Orbax operation fails, Orbax's
    event loop ends (and closes) while the other reads of that operation
    are still in flight; as each completes, tensorstore calls the closed
    loop and Python prints "RuntimeError: Event loop is closed" as an
    unraisable exception, once per array. Nothing is lost by then: the
    failure itself was raised (and is reported in one line).
  * Orbax's save threads log each failure with its traceback before the
    main thread raises it (:class:`_OrbaxThreadErrors`).
  * The other writes of a failed save (a full disk) end in asyncio tasks
    whose exceptions nobody reads; asyncio reports each when it is garbage
    collected (:class:`_UnretrievedOrbaxTasks`).

  Process-wide, so a command installs it (training and evaluation, which
  resume from or write checkpoints); a library call such as
  ``checkpointing.load`` never does.
  """
  global _quiet_installed
  if _quiet_installed:
    return
  _quiet_installed = True
  previous = sys.unraisablehook

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == _EVENT_LOOP_CLOSED):
      logging.debug("A late tensorstore callback found its event loop "
                    "closed (after a failed checkpoint read or write).",
                    exc_info=(unraisable.exc_type, unraisable.exc_value,
                              unraisable.exc_traceback))
      return
    previous(unraisable)

  sys.unraisablehook = hook
  std_logging.getLogger("absl").addFilter(_OrbaxThreadErrors())
  std_logging.getLogger("asyncio").addFilter(_UnretrievedOrbaxTasks())


