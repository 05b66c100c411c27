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

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "pascalcontext_fcn16s"
  config.model.num_classes = 60
  config.init_from = "runs/pascalcontext_fcn32s"
  config.preprocessing = "pascal_context"
  config.dataset.name = "pascal_context"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  # The metrics count background as one of the 60 classes, as the reference's
  # score.py does; ("background",) gives means over the 59 task classes only
  # (docs/reference.md §8.4).
  config.eval.exclude_classes = ()
  config.optim.base_lr = 1e-12
  config.num_train_steps = 400_000
  config.eval_every_steps = 8000
  config.checkpoint.every_steps = 8000
  return config
