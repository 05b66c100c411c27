r"""Measures the peak memory of sliding-window inference on a huge image.

  python tools/slide_memory.py [--size 8000] [--windows 256,512,1024]
      [--model fcn8s] [--width-divisor 32] [--batch-size 4] [--height H]

For every window size a fresh process (so that its peak is its own) builds
the network (random weights: memory does not depend on their values), makes
a ``size x size`` uint8 RGB image (``height x size`` with ``--height``: a
strip as wide as the image, for nets too slow to run every window: memory
depends on the window, the batch and the width, the labels and the image
aside), and segments it with
``Predictor(mode="slide", window=W, stride=3W/4)``, keeping only the labels
as ``python -m fcn_jax.predict --mode slide`` does without
``--save-logits``. It reports the process's peak resident memory
(``ru_maxrss``) before segmenting (Python, JAX, the weights, the compiled
window batch, the image) and after, their difference (what segmenting
added), the estimate ``Predictor.memory_bytes`` makes for the ``--max-memory``
check, and the time. One more process compiles (without running) whole-image
inference of the same image and reports the estimate for it, which is what
slide mode avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MIB = 2.0**20


def _peak_rss() -> int:
  """This process's peak resident memory so far, in bytes (Linux: KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(args: argparse.Namespace) -> dict:
  """In this process: one window size (or, window 0, the whole image's
  estimate only)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from fcn_jax import models
  from fcn_jax.inference import predictor as predictor_lib
  from fcn_jax.data.preprocessing import CAFFE_VGG

  model = models.create_model(args.model, width_divisor=args.width_divisor)
  variables = models.init_variables(model, jax.random.key(0))
  if args.window == 0:
    predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG,
                                    mode="exact", batch_size=1)
    return {"window": "whole", "estimate_mib": predictor.memory_bytes(
        args.height, args.size) / MIB}
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                                  window=args.window,
                                  batch_size=args.batch_size)
  estimate = predictor.memory_bytes(args.height, args.size)  # Compiles.
  image = np.random.default_rng(0).integers(
      0, 256, (args.height, args.size, 3), np.uint8)
  before = _peak_rss()
  start = time.time()
  labels = predictor.predict([image])[0]
  seconds = time.time() - start
  after = _peak_rss()
  assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
  return {"window": args.window, "stride": predictor.stride,
          "before_mib": before / MIB, "peak_mib": after / MIB,
          "added_mib": (after - before) / MIB, "estimate_mib": estimate / MIB,
          "seconds": seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=8000)
  parser.add_argument("--windows", default="256,512,1024")
  parser.add_argument("--model", default="fcn8s")
  parser.add_argument("--width-divisor", type=int, default=32)
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--height", type=int, default=None,
                      help="image height (default: --size, a square)")
  parser.add_argument("--window", type=int, default=None,
                      help=argparse.SUPPRESS)  # The child process's window.
  args = parser.parse_args()
  args.height = args.height or args.size
  if args.window is not None:
    print(json.dumps(measure(args)))
    return
  from fcn_jax.inference import sliding_window  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  rows = []
  for window in [int(w) for w in args.windows.split(",")] + [0]:
    command = [sys.executable, __file__, "--window", str(window)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("window", "windows")]
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
      sys.exit(f"window {window} failed:\n{result.stderr[-3000:]}")
    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
  print(f"{args.model} /{args.width_divisor}, {args.height}x{args.size} "
        f"image, batch {args.batch_size} windows, CPU, "
        f"{os.cpu_count()} cores")
  print("| window | stride | windows | peak RSS before (MiB) | peak RSS "
        "(MiB) | added (MiB) | estimate (MiB) | time (s) |")
  print("|---|---|---|---|---|---|---|---|")
  for row in rows:
    if row["window"] == "whole":
      print(f"| whole image | - | 1 | - | - | - | "
            f"{row['estimate_mib']:.0f} | not run |")
      continue
    count = (len(sliding_window.tile_starts(args.height, row["window"],
                                            row["stride"]))
             * len(sliding_window.tile_starts(args.size, row["window"],
                                              row["stride"])))
    print(f"| {row['window']} | {row['stride']} | {count} | "
          f"{row['before_mib']:.0f} | {row['peak_mib']:.0f} | "
          f"{row['added_mib']:.0f} | {row['estimate_mib']:.0f} | "
          f"{row['seconds']:.0f} |")


if __name__ == "__main__":
  main()
