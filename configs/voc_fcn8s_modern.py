"""FCN-8s with a modern recipe (not the reference; expect different numbers).

Normalised loss (mean over the valid pixels of the global batch of 24, split
across the devices), SGD momentum 0.9 with a warmup + poly schedule, random
rescaling, mirroring and 320x320 crops, bfloat16 computation, shuffled epochs
over the augmented training set. Trained all at once from VGG16. The learning
rate belongs to the normalised loss: never combine it with the summed loss.

  python -m fcn_jax.main --config configs/voc_fcn8s_modern.py \
      --workdir runs/voc_fcn8s_modern
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s"
  config.model.dtype = "bfloat16"
  config.init_from = "weights/vgg16_caffe"
  config.dataset.train_split = "train_aug"

  config.batch_size = 24  # >= 20 (CVPR), divisible by 1, 2, 3, 4, 6 or 8 devices.
  config.eval_batch_size = 16
  config.num_train_steps = 30_000
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000

  config.input.train_mode = "epochs"
  config.input.crop_size = 320
  config.input.random_mirror = True
  config.input.scale_range = (0.5, 2.0)
  config.input.eval_pad_size = 512
  config.input.num_workers = 8

  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-3
  config.optim.momentum = 0.9
  config.optim.schedule = "poly"
  config.optim.warmup_steps = 500
  return config
