r"""Images per second of the grain training pipeline at VOC image sizes.

Generates a SYNTHETIC ``synthetic_shapes`` variant with VOC-like sizes (375
to 500 px per side, JPEG) once, then times the training iterator with 0
(in-process), 1, 2 and N worker processes::

  python benchmarks/input_pipeline.py [--workers 0,1,2,16] [--batches 30]

Target: at least 100 images/s per worker process, so a 16-core GPU host
feeds the model. The numbers depend on how busy the machine's cores are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax import default_config
from fcn_jax import run_config
from fcn_jax.data import augmentations
from fcn_jax.data import batch_transforms
from fcn_jax.data import data_sources
from fcn_jax.data import input_pipeline
from fcn_jax.data import preprocessing
from fcn_jax.datasets import common
from fcn_jax.datasets import synthetic_shapes


def _run(args: argparse.Namespace, num_workers: int, reference: bool
         ) -> run_config.Run:
  """The run the iterator takes, resolved as a dry run: no split is read
  (the benchmark gives its own)."""
  config = default_config.get_config()
  config.model.num_classes = 21
  config.dataset.update(dict(
      name="synthetic_shapes", train_split=synthetic_shapes.TRAIN_SPLIT,
      eval_split=synthetic_shapes.VAL_SPLIT))
  config.batch_size = 1 if reference else args.batch_size
  config.input.update(dict(
      train_mode="reference" if reference else "epochs",
      crop_size=0 if reference else args.crop_size,
      random_mirror=not reference,
      scale_range=(1.0, 1.0) if reference else (0.5, 2.0),
      eval_pad_size=512, num_workers=num_workers, buckets="none"))
  return run_config.resolve(config, "dry_run")


def _images_per_second(source: data_sources.SplitSource,
                       run: run_config.Run, num_batches: int) -> float:
  iterator = input_pipeline.create_train_iterator(
      run, preprocessing.CAFFE_VGG, process_index=0, process_count=1,
      source=source)
  try:
    warmup = max(2, run.input.num_workers)  # Start every worker first.
    for _ in range(warmup):
      next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(num_batches):
      images += next(iterator)["image"].shape[0]
    return images / (time.perf_counter() - start)
  finally:
    if hasattr(iterator, "close"):
      iterator.close()


def _cpu_ms_per_image(source: data_sources.SplitSource,
                      args: argparse.Namespace) -> float:
  """CPU time of the batch transform alone, one thread: load-independent."""
  transform = batch_transforms.TrainBatchTransform(
      augmentations.TrainAugmentation(args.crop_size, True, (0.5, 2.0)),
      preprocessing.CAFFE_VGG, seed=0, global_batch_size=args.batch_size)
  records = source.records
  start = time.process_time()
  for index in range(args.batches):
    transform.map_with_index(index, [
        records[(index * args.batch_size + j) % len(records)]
        for j in range(args.batch_size)])
  return (time.process_time() - start) * 1000 / (args.batches * args.batch_size)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--workers", default=f"0,1,2,{os.cpu_count()}",
                      help="Comma-separated worker counts.")
  parser.add_argument("--batches", type=int, default=30,
                      help="Timed batches per measurement.")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--crop_size", type=int, default=500)
  parser.add_argument("--num_images", type=int, default=128,
                      help="Images in the generated dataset.")
  parser.add_argument("--data_dir", default=None,
                      help="Where to generate the data (default: a temp dir).")
  args = parser.parse_args(argv)

  data_dir = args.data_dir or tempfile.mkdtemp(prefix="fcn_jax_bench_")
  builder = synthetic_shapes.SyntheticShapes(
      config=synthetic_shapes.SyntheticShapesConfig(
          name=f"voc_size_{args.num_images}", num_train=args.num_images,
          num_val=1, min_size=375, max_size=500),
      data_dir=data_dir)
  builder.download_and_prepare()
  records = builder.as_data_source(synthetic_shapes.TRAIN_SPLIT,
                                   decoders=common.skip_decoding_decoders())
  source = data_sources.SplitSource(records, "synthetic_shapes:bench",
                                    synthetic=True)
  mean_kb = sum(len(records[i]["image"]) for i in range(8)) / 8 / 1024

  print(f"SYNTHETIC images of 375..500 px (JPEG, ~{mean_kb:.0f} KB each), "
        f"{os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at start.")
  print(f"epochs: scale 0.5-2.0, mirror, crop {args.crop_size}, batch "
        f"{args.batch_size}; reference: native size, batch 1.")
  cpu_ms = _cpu_ms_per_image(source, args)
  print(f"epochs transform alone, one thread: {cpu_ms:.2f} CPU ms/image = "
        f"{1000 / cpu_ms:.0f} images/s per busy core.")
  print(f"{'mode':>10} {'workers':>8} {'images/s':>10} {'per worker':>11}")
  for workers in (int(w) for w in args.workers.split(",")):
    for reference in (False, True):
      rate = _images_per_second(source, _run(args, workers, reference),
                                args.batches * (args.batch_size
                                                if reference else 1))
      mode = "reference" if reference else "epochs"
      print(f"{mode:>10} {workers:>8} {rate:>10.1f} "
            f"{rate / max(workers, 1):>11.1f}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
