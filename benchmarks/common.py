"""Shared machinery of the speed benchmarks: sweep, timing, peaks, output.

A benchmark row is one (model, image size, dtype, upsample mode, batch size).
For each row every *runner* (fcn_jax, and optionally PyTorch eager and PyTorch
"best") is built, compiled and warmed up, then timed in interleaved rounds
(jax, torch eager, torch best, jax, ...) so that a load change on a shared
machine hits all of them alike. Each round runs enough steps to last about
``--min-repeat-seconds`` and blocks on the result (``block_until_ready`` /
``cuda.synchronize``) before stopping the clock; a row reports the median over
rounds. Warm-up and compilation are never timed.

MFU is ``FLOPs per step / seconds per step / peak FLOP/s``. The FLOPs are the
ones XLA's cost analysis reports for the compiled fcn_jax step (the same
number is used for PyTorch, which does the same work); the analytic count of
:mod:`benchmarks.flops` is printed beside it as a cross-check. The peak is the
dense tensor-core peak of the GPU from :data:`GPU_PEAK_TFLOPS`, or on a CPU the
best matrix-multiply throughput measured on this machine (labelled as such).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import flops
from fcn_jax import models

# Dense (no sparsity) peak TFLOP/s by device-name substring, first match wins.
# "float32" is the TF32 tensor-core peak: JAX and PyTorch both let cuDNN use
# TF32 for float32 convolutions by default on these GPUs (jax default matmul
# precision; torch.backends.cudnn.allow_tf32 = True). Sources: NVIDIA H100 and
# H200 datasheets (SXM / PCIe / NVL), A100 datasheet.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100 NVL", {"bfloat16": 835.0, "float32": 418.0}),
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),  # SXM (80GB HBM3).
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
)
# Without tensor cores (FP32 CUDA cores), for reference in the JSON.
GPU_FP32_SIMT_TFLOPS = {"H100 PCIe": 51.2, "H100 NVL": 60.0, "H200": 66.9,
                        "H100": 66.9, "A100": 19.5}

CPU_PEAK_MATMUL_SIZE = 3072

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Runner(Protocol):
  """One implementation of one benchmark row."""
  label: str

  def setup(self) -> None:
    """Builds, compiles and warms up (not timed)."""

  def run(self, steps: int) -> float:
    """Runs ``steps`` steps and returns the wall time in seconds."""

  def teardown(self) -> None:
    """Frees memory."""


# The nets the runners feed (one [N, H, W, 3] input, one head).
BENCHMARK_MODELS = tuple(
    name for name, net in models.NETS.items()
    if not net.multi_input and not net.multi_head
    and net.inputs[0].channels == 3)


@dataclasses.dataclass(frozen=True)
class Row:
  """The coordinates of one benchmark row."""
  model: str
  size: int
  dtype: str
  upsample: str
  batch: int
  width_divisor: int = 1


def environment() -> dict[str, Any]:
  """Device, versions, date and machine load, for the JSON and README."""
  device = jax.devices()[0]
  env = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "platform": device.platform,
      "device": device_name(),
      "device_count": jax.device_count(),
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": _version("jaxlib"),
      "flax": _version("flax"),
      "optax": _version("optax"),
      "torch": _version("torch"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  return env


def _version(module: str) -> str | None:
  try:
    return __import__(module).__version__
  except ImportError:
    return None


def _cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def on_cpu() -> bool:
  return jax.devices()[0].platform == "cpu"


def device_name() -> str:
  device = jax.devices()[0]
  if device.platform == "cpu":
    return f"CPU: {_cpu_model()} x{os.cpu_count()}"
  return device.device_kind


def gpu_peak_flops(name: str, dtype: str) -> float | None:
  """The table's dense peak FLOP/s of a GPU, or None if it is not listed."""
  for key, peaks in GPU_PEAK_TFLOPS:
    if key.lower() in name.lower():
      return peaks[dtype] * 1e12
  return None


def measured_matmul_peak(dtype: str, size: int | None = None,
                         repeats: int = 10) -> float:
  """The best FLOP/s of a large square matmul, with jax and (if any) torch.

  Used as the CPU peak for MFU: CPUs have no single datasheet number that
  holds under this machine's turbo, vector width and sharing.
  """
  size = size or CPU_PEAK_MATMUL_SIZE
  a = jnp.ones((size, size), DTYPES[dtype])
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  best = 2 * size**3 / min(times)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    t = torch.ones(size, size, dtype=getattr(torch, dtype))
    torch.matmul(t, t)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      torch.matmul(t, t)
      times.append(time.perf_counter() - start)
    best = max(best, 2 * size**3 / min(times))
  except ImportError:
    pass
  return best


class Peaks:
  """Peak FLOP/s per dtype, for MFU.

  On a GPU, the datasheet number of :data:`GPU_PEAK_TFLOPS`. On a CPU, the
  best matmul throughput measured on this machine: measured again before
  every row and the best kept, since other load only ever lowers it.
  """

  def __init__(self):
    self.flops: dict[str, float | None] = {}
    self.basis: dict[str, str] = {}

  def update(self, dtype: str) -> None:
    name = device_name()
    if on_cpu():
      peak = max(measured_matmul_peak(dtype), self.flops.get(dtype) or 0.0)
      self.flops[dtype] = peak
      self.basis[dtype] = (
          f"measured: best {CPU_PEAK_MATMUL_SIZE}^3 {dtype} matmul (jax or "
          f"torch) on this CPU during the run, {peak / 1e9:.0f} GFLOP/s")
    elif dtype not in self.flops:
      peak = gpu_peak_flops(name, dtype)
      self.flops[dtype] = peak
      kind = "TF32 tensor-core" if dtype == "float32" else "bf16 tensor-core"
      self.basis[dtype] = (
          f"datasheet {kind} dense peak of {name}, {peak / 1e12:.1f} TFLOP/s"
          if peak else f"unknown device {name!r}: add it to GPU_PEAK_TFLOPS")

  def to_json(self) -> dict[str, Any]:
    return {d: {"flops": self.flops[d], "basis": self.basis[d]}
            for d in self.flops}


# A row is "noisy", and left out of the tables, when other processes used
# more than this share of the machine's CPU time while it was timed. The load
# average and the other running processes are recorded too, but do not decide:
# the load average lags by about a minute and counts the benchmark's own
# threads (a row that follows another starts at a load near the core count on
# a quiet machine), and a process count is a snapshot.
NOISY_OTHERS_SHARE = 0.10


def _busy_jiffies() -> int | None:
  """CPU time spent busy by the whole machine so far (jiffies), or None."""
  try:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
  except (OSError, IndexError):
    return None
  values = [int(x) for x in fields]
  return sum(values) - values[3] - (values[4] if len(values) > 4 else 0)


def _other_running_processes() -> int:
  """Processes other than this one in the running state (R) now."""
  count = 0
  for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
      pid, rest = stat.read_text().split(" ", 1)
    except OSError:
      continue
    if int(pid) != os.getpid() and rest.rsplit(")", 1)[-1].split()[0] == "R":
      count += 1
  return count


class MachineWatch:
  """How quiet the machine was while a row ran (see :data:`NOISY_OTHERS_SHARE`).

  Records the load average and the other running processes at the start and
  the end, and the share of the machine's CPU time that other processes used
  in between (all busy time minus this process's own, from ``/proc/stat`` and
  ``os.times``).
  """

  def __init__(self):
    self.start_load = os.getloadavg()
    self.start_others = _other_running_processes()
    self._busy = _busy_jiffies()
    self._own = sum(os.times()[:4])
    self._wall = time.monotonic()

  def finish(self) -> dict[str, Any]:
    """The row's record: loads, processes, others' CPU share, verdict."""
    wall = time.monotonic() - self._wall
    own = sum(os.times()[:4]) - self._own
    busy = _busy_jiffies()
    share = None
    if busy is not None and self._busy is not None and wall > 0:
      busy_seconds = (busy - self._busy) / os.sysconf("SC_CLK_TCK")
      share = max(0.0, busy_seconds - own) / (wall * (os.cpu_count() or 1))
    record = {
        "load_average_1_5_15_start": [round(x, 2) for x in self.start_load],
        "load_average_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        "other_running_processes_start": self.start_others,
        "other_running_processes_end": _other_running_processes(),
        "other_processes_cpu_share": None if share is None else round(share, 3),
    }
    record["noisy"] = (
        f"other processes used {100 * share:.0f}% of the CPU time (> "
        f"{100 * NOISY_OTHERS_SHARE:.0f}%)"
        if share is not None and share > NOISY_OTHERS_SHARE else None)
    return record


def time_interleaved(runners: list[Runner], repeats: int,
                     min_repeat_seconds: float) -> dict[str, list[float]]:
  """Seconds per step of each runner, one sample per round, in turns.

  Args:
    runners: Set-up runners.
    repeats: Number of rounds (samples per runner).
    min_repeat_seconds: Each sample runs about this long (at least 1 step).

  Returns:
    ``{runner.label: [seconds per step, ...]}``.
  """
  steps = {}
  for runner in runners:  # One timed step sizes the rounds.
    steps[runner.label] = max(
        1, math.ceil(min_repeat_seconds / max(runner.run(1), 1e-6)))
  samples = {runner.label: [] for runner in runners}
  for _ in range(repeats):
    for runner in runners:
      n = steps[runner.label]
      samples[runner.label].append(runner.run(n) / n)
  return samples


def add_flags(parser: argparse.ArgumentParser, default_sizes: str) -> None:
  """Command-line flags shared by the training and inference benchmarks."""
  cpu = on_cpu()
  parser.add_argument("--models", default="fcn8s",
                      help="comma list of the nets with one 3-channel input "
                      f"and one head: {', '.join(BENCHMARK_MODELS)}")
  parser.add_argument("--sizes", default=default_sizes,
                      help="comma list of square image sizes")
  parser.add_argument("--dtypes", default="float32" if cpu else
                      "bfloat16,float32", help="comma list: float32, bfloat16")
  parser.add_argument("--batch-sizes", default="1,2,4" if cpu else
                      "1,2,4,8,16", help="comma list of batch sizes")
  parser.add_argument("--upsample", default="depthwise",
                      help="comma list of fcn_jax upsample modes: dense, "
                      "depthwise (the same function, see fcn_jax.models)")
  parser.add_argument("--width-divisor", type=int, default=1,
                      help="divide every VGG16 width (1 = the real FCN; "
                      "e.g. 16 for a quick smoke run)")
  parser.add_argument("--torch", action="store_true",
                      help="also time the PyTorch FCN in the same run")
  parser.add_argument("--torch-best", default=None,
                      help="comma list of candidate PyTorch settings for the "
                      "'best' column, each a '+' list of channels_last, "
                      "compile, depthwise (e.g. channels_last+compile); the "
                      "fastest candidate is kept. bf16 rows add AMP autocast. "
                      "Default: channels_last+compile+depthwise and "
                      "channels_last+depthwise on GPU; depthwise and "
                      "channels_last+depthwise on CPU (torch.compile was no "
                      "faster there).")
  parser.add_argument("--no-torch-eager", action="store_true",
                      help="skip the PyTorch eager float32 column")
  parser.add_argument("--feed", choices=("device", "host"), default="device",
                      help="device: the batch stays on the device (pure step "
                      "time); host: every step takes a new host batch, "
                      "copied ahead with a 2-deep prefetch")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed rounds per runner (median reported)")
  parser.add_argument("--min-repeat-seconds", type=float, default=1.0,
                      help="length of one timed round")
  parser.add_argument("--xla-cpu-flags", choices=("tuned", "default"),
                      default="tuned", help="tuned: add benchmarks.xla_env."
                      "TUNED_CPU_FLAGS (CPU backend only); default: XLA's")
  parser.add_argument("--output", default=None,
                      help="JSON path (default benchmarks/results/"
                      "<platform>_<kind>.json)")


def rows_from_flags(args: argparse.Namespace) -> list[Row]:
  """The sweep, in the order it is run."""
  split = lambda text: [x.strip() for x in text.split(",") if x.strip()]
  rows = []
  for model in split(args.models):
    if model not in BENCHMARK_MODELS:
      raise ValueError(
          f"--models: {model!r} is not one of the benchmarked nets "
          f"{list(BENCHMARK_MODELS)} (one 3-channel input, one head; the "
          "multi-input and two-head nets cost their streams and heads more, "
          "see benchmarks.flops)")
    for size in map(int, split(args.sizes)):
      for dtype in split(args.dtypes):
        if dtype not in DTYPES:
          raise ValueError(f"--dtypes: unknown dtype {dtype!r}; choose from "
                           f"{sorted(DTYPES)}.")
        for upsample in split(args.upsample):
          for batch in map(int, split(args.batch_sizes)):
            rows.append(Row(model, size, dtype, upsample, batch,
                            args.width_divisor))
  return rows


def summarise(samples: list[float], batch: int) -> dict[str, Any]:
  """img/s and the raw samples of one runner in one row."""
  median = statistics.median(samples)
  return {
      "seconds_per_step_median": median,
      "seconds_per_step_samples": samples,
      "images_per_second": batch / median,
  }


def add_mfu(entry: dict[str, Any], peak: float | None) -> None:
  """MFU of every runner of a row: the fcn_jax step's XLA FLOPs per second."""
  per_image = entry.get("xla_flops_per_image")
  for result in entry["runners"].values():
    result.pop("mfu", None)
    if per_image and peak:
      result["mfu"] = per_image * result["images_per_second"] / peak


def run_sweep(kind: str, args: argparse.Namespace,
              make_runners: Callable[[Row, argparse.Namespace], list[Runner]],
              after_row: Callable[[dict[str, Any]], None] | None = None
              ) -> dict[str, Any]:
  """Runs every row and returns the JSON-ready results.

  Args:
    kind: ``train`` or ``inference``.
    args: Parsed flags (:func:`add_flags`).
    make_runners: Builds a row's runners, fcn_jax first; after ``setup`` the
      fcn_jax runner's ``row_facts`` (FLOPs per image) go into the row.
    after_row: Called with the results so far after every row (to save them
      should a later row fail or the run be cut short).

  Returns:
    ``{'kind', 'environment', 'peak', 'rows': [...]}``.
  """
  env = environment()
  peaks = Peaks()
  results = []
  partial = lambda: {"kind": kind, "environment": env,
                     "peak": peaks.to_json(), "rows": results}
  for row in rows_from_flags(args):
    peaks.update(row.dtype)
    runners = make_runners(row, args)
    try:
      for runner in runners:
        runner.setup()
      watch = MachineWatch()
      samples = time_interleaved(runners, args.repeats,
                                 args.min_repeat_seconds)
      machine = watch.finish()
    finally:
      for runner in runners:
        runner.teardown()
    entry = dataclasses.asdict(row) | runners[0].row_facts
    entry["machine"] = machine
    entry["runners"] = {
        runner.label: summarise(samples[runner.label], row.batch)
        | getattr(runner, "facts", {}) for runner in runners}
    add_mfu(entry, peaks.flops[row.dtype])  # Provisional on a CPU.
    results.append(entry)
    print(format_row(entry) + (f" NOISY: {machine['noisy']}"
                               if machine["noisy"] else ""), flush=True)
    if after_row is not None:
      after_row(partial())
  for entry in results:  # With the final (best measured) CPU peak.
    add_mfu(entry, peaks.flops[entry["dtype"]])
  env["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
  return partial()


TABLE_HEADER = ("| model | size | dtype | upsample | batch | fcn_jax img/s | "
                "MFU | XLA GFLOP/img | analytic GFLOP/img | torch eager "
                "img/s | torch best img/s | best setting | jax/eager | "
                "jax/best |")


def format_row(entry: dict[str, Any]) -> str:
  """One Markdown table line (see :data:`TABLE_HEADER`)."""
  runners = entry["runners"]
  jax_result = runners["fcn_jax"]
  eager = runners.get("torch_eager")
  best = runners.get("torch_best")
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  xla = entry.get("xla_flops_per_image")
  cells = [
      entry["model"], str(entry["size"]), entry["dtype"], entry["upsample"],
      str(entry["batch"]), fmt(jax_result["images_per_second"], ".2f"),
      fmt(jax_result.get("mfu") and 100 * jax_result["mfu"], ".1f") + "%",
      fmt(xla and xla / 1e9, ".1f"),
      fmt(entry["analytic_flops_per_image"] / 1e9, ".1f"),
      fmt(eager and eager["images_per_second"], ".2f"),
      fmt(best and best["images_per_second"], ".2f"),
      (best or {}).get("setting", "-"),
      format_ratio(jax_result, eager), format_ratio(jax_result, best),
  ]
  return "| " + " | ".join(cells) + " |"


def ratio_spread(a: dict[str, Any], b: dict[str, Any]
                 ) -> tuple[float, float, float]:
  """``a``'s speed over ``b``'s: the ratio of the medians, and the lowest and
  highest ratio the rounds allow (slowest ``a`` over fastest ``b`` and the
  reverse)."""
  a_steps, b_steps = a["seconds_per_step_samples"], b["seconds_per_step_samples"]
  return (b["seconds_per_step_median"] / a["seconds_per_step_median"],
          min(b_steps) / max(a_steps), max(b_steps) / min(a_steps))


def format_ratio(a: dict[str, Any], b: dict[str, Any] | None) -> str:
  """The median ratio, with its spread in brackets when the two runners'
  rounds overlap (when they do not, the ratio's side of 1 is certain)."""
  if b is None:
    return "-"
  median, low, high = ratio_spread(a, b)
  if low > 1.0 or high < 1.0:
    return f"{median:.2f}"
  return f"{median:.2f} [{low:.2f}-{high:.2f}]"


def print_table(results: dict[str, Any]) -> None:
  """Prints a result set as Markdown: a line of context, then the table."""
  env = results["environment"]
  load = env["load_average_1_5_15"]
  load_end = env.get("load_average_1_5_15_at_end", load)
  flags = env.get("xla_cpu_flags", "tuned") if env["platform"] == "cpu" else ""
  print(f"\n**{results['kind']}** on {env['device']}; jax {env['jax']}, "
        f"flax {env['flax']}, torch {env['torch']}; {env['date'][:16]} UTC; "
        f"load average {load[0]} at start, {load_end[0]} at end"
        + (f"; XLA:CPU flags {flags}" if flags else "") + ".")
  for dtype, peak in results["peak"].items():
    print(f"MFU peak ({dtype}): {peak['basis']}.")
  print()
  print(TABLE_HEADER)
  print("|" + "---|" * (TABLE_HEADER.count("|") - 1))
  noisy = [e for e in results["rows"] if (e.get("machine") or {}).get("noisy")]
  for entry in results["rows"]:
    if entry not in noisy:
      print(format_row(entry))
  if noisy:
    print(f"\nLeft out, measured on a busy machine ({len(noisy)} rows): "
          + "; ".join(f"{e['model']} {e['size']} {e['dtype']} {e['upsample']} "
                      f"batch {e['batch']} ({e['machine']['noisy']})"
                      for e in noisy) + ".")


def write_results(results: dict[str, Any], output: str | None,
                  quiet: bool = False) -> Path:
  """Writes the JSON (default ``benchmarks/results/<platform>_<kind>.json``)."""
  if output is None:
    platform_name = results["environment"]["platform"]
    output = (Path(__file__).parent / "results"
              / f"{platform_name}_{results['kind']}.json")
  path = Path(output)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=1) + "\n")
  if not quiet:
    print(f"wrote {path}")
  return path


def main(kind: str, default_sizes: str,
         make_runners: Callable[[Row, argparse.Namespace], list[Runner]],
         xla_cpu_flags: str, argv: list[str] | None = None,
         extra_flags: Callable[[argparse.ArgumentParser], None] | None = None
         ) -> dict[str, Any]:
  """Parses flags, runs the sweep, prints the table and writes the JSON.

  Args:
    kind: ``train`` or ``inference``.
    default_sizes: ``--sizes`` default.
    make_runners: See :func:`run_sweep`.
    xla_cpu_flags: What :func:`benchmarks.xla_env.configure` applied.
    argv: Flags (default ``sys.argv[1:]``).
    extra_flags: Adds the benchmark's own flags to the parser.

  Returns:
    The results written to the JSON.
  """
  parser = argparse.ArgumentParser(description=f"fcn_jax {kind} benchmark")
  add_flags(parser, default_sizes)
  if extra_flags is not None:
    extra_flags(parser)
  args = parser.parse_args(argv)
  def save(results):
    results["environment"]["xla_cpu_flags"] = xla_cpu_flags
    write_results(results, args.output, quiet=True)

  results = run_sweep(kind, args, make_runners, after_row=save)
  results["environment"]["xla_cpu_flags"] = xla_cpu_flags
  print_table(results)
  write_results(results, args.output)
  return results


def random_variables(model: Any, seed: int = 0) -> dict[str, Any]:
  """He-scaled random float32 variables of the shapes ``model`` needs.

  Drawn with NumPy from ``jax.eval_shape`` shapes, which avoids compiling
  Flax's initialisers (several seconds on a CPU); speed does not depend on
  the values.
  """
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda: models.init_variables(model))
  rng = np.random.default_rng(seed)
  def draw(leaf):
    fan_in = max(1, math.prod(leaf.shape[:-1]))
    values = rng.standard_normal(leaf.shape, dtype=np.float32)
    return values * np.float32(math.sqrt(2.0 / fan_in))
  return jax.tree_util.tree_map(draw, shapes)


def random_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
  """Preprocessed-looking float32 images ``[N, H, W, 3]``."""
  return np.random.RandomState(seed).normal(
      0, 50, (batch, size, size, 3)).astype(np.float32)


def random_labels(batch: int, size: int, num_classes: int = 21,
                  seed: int = 1) -> np.ndarray:
  """int32 labels with about 5% ignore pixels (255)."""
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, num_classes, (batch, size, size)).astype(np.int32)
  labels[rng.rand(batch, size, size) < 0.05] = 255
  return labels


def analytic_flops(row: Row, train: bool) -> int:
  """Analytic FLOPs per image of ``row``."""
  return flops.model_flops(row.model, row.size, row.size, train=train,
                           width_divisor=row.width_divisor,
                           upsample_mode=row.upsample)
