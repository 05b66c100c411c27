r"""Training throughput and MFU of fcn_jax, with a PyTorch peer in the run.

Times one step of fcn_jax's own train step (``fcn_jax.training.step.train_step``,
pmapped as training runs it: forward, backward, Caffe SGD momentum update with
the frozen upsamplers held fixed; state donated) on a batch of random
images and labels already on the device, for a sweep of models, sizes, dtypes,
upsample modes and batch sizes; prints a Markdown table and writes JSON. See
benchmarks/README.md.

  python benchmarks/train_step.py --models fcn8s --sizes 500 \
      --dtypes bfloat16,float32 --batch-sizes 1,2,4,8,16 --torch
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import xla_env  # pylint: disable=g-import-not-at-top,wrong-import-position

XLA_CPU_FLAGS = xla_env.configure(sys.argv)  # Before JAX initialises.

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top,wrong-import-position


def add_train_flags(parser):
  parser.add_argument("--no-donate", action="store_true",
                      help="do not donate the train state to the step (to "
                      "measure what donation saves)")


def make_runners(row, args):
  runners = [jax_bench.JaxRunner(row, train=True, feed=args.feed,
                                 donate=not args.no_donate)]
  if args.torch:
    from benchmarks import torch_bench  # pylint: disable=g-import-not-at-top
    runners += torch_bench.torch_runners(row, True, args)
  return runners


if __name__ == "__main__":
  common.main("train", "224" if common.on_cpu() else "500", make_runners,
              XLA_CPU_FLAGS, extra_flags=add_train_flags)
