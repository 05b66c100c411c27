"""voc-fcn-alexnet: FCN-AlexNet, the reference's normalised training.

CaffeNet trunk (docs/reference.md §2.3) from ``bvlc_reference_caffenet``
converted to fcn_alexnet (fc6/fc7 convolutionalised, §4.5; score_fr starts at
zero). Unlike the VGG "heavy" solvers (§5.1, §9.4): the loss is normalised
over the valid pixels (``normalize: true``), lr 1e-4, momentum 0.9 and
gradient accumulation over 20 images (``iter_size`` 20); the trunk's biases
keep Caffe's default multipliers (lr 1, decayed: the model says so, see
``FCN.default_bias_multiplier_layers``), score_fr's are 2/0. 100k updates
(25 x 4000, 2M images), evaluation on seg11valid every 4000.

Published: 48.0 mean IU on seg11valid (reference README, §9.1); CVPR Table 1
gives 39.8 for the minibatch-20 training without SBD on VOC2011 val.

  python -m fcn_jax.convert --format caffemodel --model fcn_alexnet \
      --input bvlc_reference_caffenet.caffemodel --output weights/caffenet_fcn
  python -m fcn_jax.main --config configs/voc_fcn_alexnet.py \
      --workdir runs/voc_fcn_alexnet
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn_alexnet"
  config.model.num_classes = 21
  config.init_from = "weights/caffenet_fcn"
  config.optim.base_lr = 1e-4
  config.optim.momentum = 0.9
  config.optim.iter_size = 20
  config.optim.loss_normalization = "valid"
  config.num_train_steps = 100_000
  return config
