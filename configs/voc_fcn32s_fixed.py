"""FCN-32s-fixed (CVPR Table 2): only the classifier learns, the trunk fixed.

As voc_fcn32s (the reference "heavy" solver: batch 1, summed loss, lr 1e-10,
momentum 0.99, 100k iterations; docs/reference.md §5), but with
``optim.trainable = "score"``: every layer except score_fr stays exactly at
its VGG16 value. The paper trained this variant with its minibatch-20 recipe,
not the heavy one; the reference repository has no solver for it.

Published: 45.4 mean IU on seg11valid (pixel acc. 83.0, mean acc. 59.7, f.w.
IU 72.0; CVPR Table 2, docs/reference.md §9.3).

  python -m fcn_jax.main --config configs/voc_fcn32s_fixed.py \
      --workdir runs/voc_fcn32s_fixed
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn32s"
  config.optim.base_lr = 1e-10
  config.optim.trainable = "score"
  config.init_from = "weights/vgg16_caffe"
  return config
