"""pascalcontext-fcn16s: PASCAL-Context, 59 classes + background.

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.4): batch 1,
summed loss, lr 1e-12, momentum 0.99, trained on VOC2010 train from the trained
pascalcontext_fcn32s, evaluated on val (5,105 images) every 8000 iterations for
400k (the solve.py loop, 50 x 8000; max_iter says 300k, and which the authors
ran is UNVERIFIED).

Published: no number has been checked (the CVPR paper has no PASCAL-Context
table; the PAMI one is UNVERIFIED, docs/reference.md §9.4).

Needs the pascal_context dataset: python -m fcn_jax.prepare_data --dataset
pascal_context --manual_dir DIR (until then training stops with that
instruction).

  python -m fcn_jax.main --config configs/pascalcontext_fcn16s.py \
      --workdir runs/pascalcontext_fcn16s
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/pascalcontext.py:fcn16s.
  return config_families.PASCAL_CONTEXT.get_config("fcn16s")
