"""voc-fcn32s, reference "heavy" training (docs/reference.md §5).

Batch 1 at native size, summed loss, SGD momentum 0.99, fixed lr 1e-10, weight
decay 5e-4 (weights only), biases at 2x lr, 100k iterations, evaluation on
seg11valid every 4000. Starts from the VGG16 weights converted to an fcn_jax
weights export (see the README); score_fr starts at zero.

  python -m fcn_jax.main --config configs/voc_fcn32s.py --workdir runs/voc_fcn32s
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn32s"
  config.optim.base_lr = 1e-10
  config.init_from = "weights/vgg16_caffe"
  return config
