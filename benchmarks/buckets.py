r"""Native size vs shape buckets: wall time of the first training steps and of
one evaluation pass, compiles included, on a fixture with VOC's size mix.

  python benchmarks/buckets.py [--steps 20] [--scale 0.25] [--net fcn8s] \
      [--width-divisor 8] [--json out.json]

The fixture's image sizes are drawn from a histogram like PASCAL VOC's
(375x500 42%, 333x500 15%, 500x375 8%, the rest one side 500 and the other
uniform in [100, 500)), times ``--scale`` (a CPU cannot train full-size
FCN-8s steps quickly), with random pixels and labels, PNG-encoded as a TFDS
split holds them. Each mode runs in this process with fresh step functions
and no persistent compilation cache:

* ``native``: ``config.input.buckets = "none"``, every image at its own size
  (one compile per distinct size);
* ``buckets``: ``"auto"``, at most ``--max-buckets`` buckets chosen from the
  split's sizes, the net masking to each image's true size (the same
  results).

Both train in the reference mode (batch 1) and evaluate with batch 1; the
compiles of the train and eval steps are counted from JAX's compile log.

``--compile-for h100`` measures instead what one compile costs for a GPU
(without one: :mod:`fcn_jax.aot`, the CUDA plugin) at each of ``--sizes``
(VOC's four buckets by default), full-width FCN-8s in float32, batch 1:
the train and eval steps at the exact size (``buckets = "none"``: what each
distinct size costs natively) and at the same size as a bucket (masked to
the images' true sizes), then multiplies out what compiling every distinct
training size of a split costs against compiling the buckets
(``--distinct-sizes``; by default the count the VOC-like mix above draws
for SBD's 8,498 training images).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax import xla_flags

xla_flags.configure("tuned")

import jax
import numpy as np
from PIL import Image

from fcn_jax import default_config
from fcn_jax import parallel
from fcn_jax import run_config
from fcn_jax.data import buckets
from fcn_jax.data import data_sources
from fcn_jax.data import input_pipeline
from fcn_jax.data import preprocessing as preprocessing_lib
from fcn_jax.evaluation import evaluator
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib

CAFFE = preprocessing_lib.CAFFE_VGG
VOC_MIX = (((375, 500), 0.42), ((333, 500), 0.15), ((500, 375), 0.08))


def voc_like_sizes(count: int, scale: float, seed: int) -> np.ndarray:
  """``[count, 2]`` sizes from VOC's histogram, times ``scale``."""
  rng = np.random.default_rng(seed)
  sizes = []
  for _ in range(count):
    r, total = rng.random(), 0.0
    for size, share in VOC_MIX:
      total += share
      if r < total:
        sizes.append(size)
        break
    else:
      side = int(rng.integers(100, 500))
      sizes.append((side, 500) if rng.random() < 0.7 else (500, side))
  return np.maximum(1, np.round(np.asarray(sizes) * scale)).astype(int)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def fixture(sizes: np.ndarray, seed: int, name: str
            ) -> data_sources.SplitSource:
  rng = np.random.default_rng(seed)
  records = []
  for k, (height, width) in enumerate(sizes):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (height, width), dtype=np.uint8)
    records.append({"image": _png(image), "segmentation_mask": _png(label),
                    "image_id": f"{name}{k}".encode(), "height": int(height),
                    "width": int(width), "label_source": b"benchmark"})
  return data_sources.SplitSource(records, f"benchmark:{name}", False)


@contextlib.contextmanager
def count_compiles(pattern: str):
  """Counts JAX's "Compiling ..." log lines that contain ``pattern``."""
  found = []

  class Handler(logging.Handler):

    def emit(self, record):
      message = record.getMessage()
      if message.startswith("Compiling") and pattern in message:
        found.append(message)

  handler = Handler()
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield found
  finally:
    logger.removeHandler(handler)


def make_config(args: argparse.Namespace, bucket_setting: str):
  config = default_config.get_config()
  config.model.name = args.net
  config.model.num_classes = 21
  config.model.width_divisor = args.width_divisor
  config.dataset.name = "benchmark"
  config.input.buckets = bucket_setting
  config.input.max_buckets = args.max_buckets
  config.num_train_steps = args.steps
  return config


def run_mode(args, bucket_setting, train_source, eval_source, params):
  config = make_config(args, bucket_setting)
  # The batches come from the fixture's splits: no dataset is read.
  run = run_config.resolve(config, "dry_run")
  model = run.spec.create()
  result = {}
  start = time.perf_counter()
  with count_compiles("int32[1,1,") as compiles:
    tx = state_lib.create_optimizer(run, params, model)
    state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
    devices = parallel.devices_for_batch(config.batch_size)
    state = parallel.replicate(state, devices)
    step = step_lib.make_train_fn(model, tx, run, devices)
    batches = input_pipeline.create_train_iterator(
        run, CAFFE, process_index=0, process_count=1, source=train_source)
    shapes = set()
    for _ in range(args.steps):
      batch = next(batches)
      shapes.add(batch["image"].shape[1:3])
      state, metrics = step(state, parallel.shard(batch, len(devices),
                                                  keys=step_lib.BATCH_KEYS))
    jax.block_until_ready((state, metrics))
  result["train_seconds"] = time.perf_counter() - start
  result["train_compiles"] = len(compiles)
  result["train_shapes"] = len(shapes)
  start = time.perf_counter()
  with count_compiles("bool[") as compiles:
    eval_step, eval_devices = evaluator.make_eval_fn(model, run)
    data = input_pipeline.create_eval_iterator(
        run, CAFFE, process_index=0, process_count=1, source=eval_source)
    metrics, _ = evaluator.evaluate(eval_step, eval_devices, state.params,
                                    data, num_classes=21)
  result["eval_seconds"] = time.perf_counter() - start
  result["eval_compiles"] = len(compiles)
  result["eval_mean_iu"] = metrics["mean_iu"]
  result["eval_images"] = metrics["num_images"]
  return result


SBD_TRAIN_IMAGES = 8498


def gpu_compile_times(args: argparse.Namespace) -> dict:
  """One compile per size for a GPU, natively and as a bucket; the totals."""
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  from fcn_jax.aot import steps
  from fcn_jax.aot import targets
  # No GPU here: JAX runs on the CPU, where the CUDA plugin registers.
  jax.config.update("jax_platforms", "cpu")
  target = targets.make_target(args.compile_for)
  sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
  distinct = args.distinct_sizes or len(np.unique(
      voc_like_sizes(SBD_TRAIN_IMAGES, 1.0, 0), axis=0))

  def compile_at(height, width, bucketed):
    config = make_config(args, f"{height}x{width}" if bucketed else "none")
    config.model.width_divisor = 1
    with models.layers.target_platform(target.devices[0].platform):
      results = steps.dry_run(config, target.devices,
                              capacity=target.capacity_bytes,
                              native_size=f"{height}x{width}")
    return {f"{name}_{kind}": round(getattr(results[name], field), 1)
            for name in ("train", "eval")
            for kind, field in (("wall", "compile_seconds"),
                                ("cpu", "compile_cpu_seconds"))}

  compile_at(100, 100, False)  # Warm-up: one-time costs out of the timings.
  report = {"date": datetime.date.today().isoformat(),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores (compiling for "
                       f"{target.device_kind})",
            "load_average_start": os.getloadavg(), "jax": jax.__version__,
            "net": f"{args.net}, full width, float32, batch 1",
            "distinct_training_sizes": distinct, "sizes": {}}
  for height, width in sizes:
    report["sizes"][f"{height}x{width}"] = {
        "native": compile_at(height, width, False),
        "bucket": compile_at(height, width, True)}
    print(f"{height}x{width}", json.dumps(report["sizes"][f"{height}x{width}"]),
          flush=True)
  report["load_average_end"] = os.getloadavg()
  report["arithmetic"] = {}
  for kind in ("wall", "cpu"):
    native = [r["native"][f"train_{kind}"] + r["native"][f"eval_{kind}"]
              for r in report["sizes"].values()]
    bucket = [r["bucket"][f"train_{kind}"] + r["bucket"][f"eval_{kind}"]
              for r in report["sizes"].values()]
    per_size = sum(native) / len(native)
    report["arithmetic"][kind] = {
        "native_seconds_per_size": round(per_size, 1),
        "native_all_sizes_seconds": round(per_size * distinct),
        "buckets_seconds": round(sum(bucket), 1)}

  def cell(r):
    return " / ".join(f"{r[f'{name}_cpu']:.0f} ({r[f'{name}_wall']:.0f})"
                      for name in ("train", "eval"))

  _emit(report, ["| size | native: train / eval compile, CPU s (wall s) | "
                 "bucket (masked): train / eval, CPU s (wall s) |",
                 "|---|---|---|"] + [
                     f"| {size} | {cell(r['native'])} | {cell(r['bucket'])} |"
                     for size, r in report["sizes"].items()], args.json)
  return report


def _emit(report: dict, table: list[str], json_path: str) -> None:
  """Prints the report and its Markdown table; writes the JSON if asked."""
  print(json.dumps(report, indent=1))
  print("\n" + "\n".join(table))
  if json_path:
    with open(json_path, "w") as f:
      json.dump(report, f, indent=1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--train-images", type=int, default=200)
  parser.add_argument("--eval-images", type=int, default=40)
  parser.add_argument("--scale", type=float, default=0.25)
  parser.add_argument("--net", default="fcn8s")
  parser.add_argument("--width-divisor", type=int, default=8)
  parser.add_argument("--max-buckets", type=int, default=4)
  parser.add_argument("--modes", default="native,buckets")
  parser.add_argument("--json", default="")
  parser.add_argument("--compile-for", default="",
                      help="A GPU topology (h100): measure one compile per "
                      "size for it instead (see the module docstring).")
  parser.add_argument("--sizes", default="375x500,333x500,500x375,500x500",
                      help="With --compile-for: the sizes compiled.")
  parser.add_argument("--distinct-sizes", type=int, default=0,
                      help="With --compile-for: distinct training sizes of "
                      "the split (0: drawn from the VOC-like mix).")
  args = parser.parse_args()
  if args.compile_for:
    gpu_compile_times(args)
    return
  train_sizes = voc_like_sizes(args.train_images, args.scale, 0)
  eval_sizes = voc_like_sizes(args.eval_images, args.scale, 1)
  train_source = fixture(train_sizes, 0, "train")
  eval_source = fixture(eval_sizes, 1, "eval")
  chosen = {name: buckets.choose_buckets(sizes, args.max_buckets)
            for name, sizes in (("train", train_sizes), ("eval", eval_sizes))}
  report = {
      "date": datetime.date.today().isoformat(),
      "machine": f"{platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores, {jax.devices()[0].device_kind}",
      "load_average_start": os.getloadavg(), "jax": jax.__version__,
      "args": vars(args),
      "distinct_sizes": {"train": len(np.unique(train_sizes, axis=0)),
                         "eval": len(np.unique(eval_sizes, axis=0))},
      "buckets": {k: [list(b) for b in v] for k, v in chosen.items()},
      "padding_overhead": {
          "train": buckets.padding_overhead(train_sizes, chosen["train"]),
          "eval": buckets.padding_overhead(eval_sizes, chosen["eval"])},
      "modes": {}}
  config = make_config(args, "none")
  params = run_config.model_spec(config).create().init(
      jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
  settings = {"native": "none", "buckets": "auto"}
  for mode in args.modes.split(","):
    report["modes"][mode] = run_mode(args, settings[mode], train_source,
                                     eval_source, params)
    print(mode, json.dumps(report["modes"][mode]), flush=True)
  report["load_average_end"] = os.getloadavg()
  _emit(report, [f"| | train: first {args.steps} steps | train compiles | "
                 f"eval pass ({args.eval_images} images) | eval compiles |",
                 "|---|---|---|---|---|"] + [
                     f"| {mode} | {r['train_seconds']:.0f} s | "
                     f"{r['train_compiles']} | {r['eval_seconds']:.0f} s | "
                     f"{r['eval_compiles']} |"
                     for mode, r in report["modes"].items()], args.json)


if __name__ == "__main__":
  main()
