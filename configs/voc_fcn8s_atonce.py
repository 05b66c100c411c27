"""voc-fcn8s-atonce, reference "heavy" training of FCN-8s in one stage.

From VGG16 directly, with the fixed skip scales 0.01 (pool4) and 1e-4 (pool3),
lr 1e-10 and 300k iterations (docs/reference.md §5.1).

  python -m fcn_jax.main --config configs/voc_fcn8s_atonce.py \
      --workdir runs/voc_fcn8s_atonce
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s_atonce"
  config.optim.base_lr = 1e-10
  config.num_train_steps = 300_000
  config.init_from = "weights/vgg16_caffe"
  return config
