"""Quickstart: train and evaluate a small FCN-8s on SYNTHETIC shapes, on CPU.

  python -m fcn_jax.main --config configs/quickstart.py --workdir runs/quickstart

The whole loop (data generation, training, evaluation, checkpoints, metrics
table) in a few minutes on a laptop. The data is ``synthetic_shapes``
(procedural shapes in the 20 VOC class colours on a textured background,
generated locally on first use), so the numbers say nothing about PASCAL VOC.
The network is FCN-8s with every width divided by 8, trained FROM SCRATCH (no
pretrained VGG16 weights are available offline) with the normalised loss and a
modern recipe (momentum 0.9, poly schedule, crops and mirroring), not the
reference solver.
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s"
  config.model.width_divisor = 8
  config.model.dropout_rate = 0.0
  config.preprocessing = "torchvision"

  config.dataset.name = "synthetic_shapes"
  config.dataset.train_split = "synthetic_train"
  config.dataset.eval_split = "synthetic_val"

  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 800
  config.eval_every_steps = 400
  config.log_every_steps = 50
  config.checkpoint.every_steps = 400

  config.input.train_mode = "epochs"
  config.input.crop_size = 64
  config.input.random_mirror = True
  config.input.eval_pad_size = 128

  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-2
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = "poly"
  config.optim.warmup_steps = 50
  return config
