"""voc-fcn8s, reference "heavy" training, staged from a trained FCN-16s.

As voc_fcn32s but lr 1e-14 and initialised by name from the FCN-16s run
(score_pool3 starts at zero).

  python -m fcn_jax.main --config configs/voc_fcn8s.py --workdir runs/voc_fcn8s
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s"
  config.optim.base_lr = 1e-14
  config.init_from = "runs/voc_fcn16s"
  return config
