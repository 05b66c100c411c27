"""What the masks of ``sizes=`` cost: one forward pass with and without them.

Compiles ``model.apply(v, x)`` and ``model.apply(v, x, sizes=...)`` for one
input shape, then times each (one warm-up run, then ``--runs`` timed runs,
median). The masked program is run with a size smaller than the input (so the
masks cut) and the size is traced, as in bucketed training. Prints the compile
and run times, the ratio and the load average (the machine may be shared).

  python benchmarks/masked_overhead.py --model fcn8s --size 500 --runs 1
"""

import argparse
import os
from pathlib import Path
import statistics
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import xla_env  # pylint: disable=g-import-not-at-top,wrong-import-position

XLA_CPU_FLAGS = xla_env.configure(sys.argv)  # Before JAX initialises.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position


def _time(function, *args, runs: int) -> tuple[float, float]:
  """``(compile seconds, median run seconds)``."""
  start = time.perf_counter()
  compiled = jax.jit(function).lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # Warm-up.
  samples = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    samples.append(time.perf_counter() - start)
  return compile_s, statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="fcn8s")
  parser.add_argument("--size", type=int, default=500,
                      help="input height and width")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--width-divisor", type=int, default=1)
  parser.add_argument("--runs", type=int, default=1)
  parser.add_argument("--xla-cpu-flags", default="tuned",
                      choices=("tuned", "default"),
                      help="XLA CPU flags (benchmarks/xla_env.py)")
  args = parser.parse_args(argv)

  model = models.create_model(args.model, width_divisor=args.width_divisor)
  variables = common.random_variables(model)
  images = common.random_images(args.batch, args.size)
  sizes = np.full((args.batch, 2), args.size * 3 // 4, np.int32)
  print(f"{args.model} (width / {args.width_divisor}), batch {args.batch}, "
        f"{args.size}x{args.size}, {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, XLA CPU flags {XLA_CPU_FLAGS}")
  print(f"load average before: {os.getloadavg()}")
  plain = _time(lambda v, x: model.apply(v, x), variables, images,
                runs=args.runs)
  masked = _time(lambda v, x, s: model.apply(v, x, sizes=s), variables,
                 images, sizes, runs=args.runs)
  for name, (compile_s, run_s) in (("sizes=None", plain),
                                   ("sizes given", masked)):
    print(f"{name:12s} compile {compile_s:7.2f} s   forward {run_s:7.3f} s")
  print(f"masked / plain: compile {masked[0] / plain[0]:.2f}x, "
        f"forward {masked[1] / plain[1]:.2f}x")
  print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
