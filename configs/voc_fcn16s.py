"""voc-fcn16s, reference "heavy" training, staged from a trained FCN-32s.

As voc_fcn32s but lr 1e-12 and initialised by name from the FCN-32s run
(score_fr and the trunk are copied, score_pool4 starts at zero).

  python -m fcn_jax.main --config configs/voc_fcn16s.py --workdir runs/voc_fcn16s
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn16s"
  config.optim.base_lr = 1e-12
  config.init_from = "runs/voc_fcn32s"
  return config
