r"""Your own folder dataset on a laptop CPU, in minutes: a small FCN-8s from
scratch.

The same journey as configs/folder_fcn8s.py without a GPU or pretrained
weights, to check the data, the training and the outputs before the real
run::

  python -m fcn_jax.prepare_data --dataset folder --manual_dir ~/data/cats \
      --name my_cats --data_dir ~/tensorflow_datasets
  python -m fcn_jax.main --config configs/folder_quickstart.py \
      --workdir runs/my_cats_quick --config.dataset.name=my_cats \
      --config.dataset.data_dir=~/tensorflow_datasets

FCN-8s with every width divided by 8 (2.1M parameters instead of 134M),
trained FROM SCRATCH: no init_from, he_normal trunk kernels and the
torchvision preprocessing (inputs near -2..2; the Caffe preprocessing's
0..255 inputs suit the pretrained VGG16, and from scratch they start the loss
far above ln(classes)). The recipe is configs/quickstart.py's (the
normalised loss, momentum 0.9, warmup + poly, mirroring), on 128x128 crops
of images rescaled by 0.5-1.0, 300 steps of 8 images; evaluation is exact
(native size, one image at a time), so any image size works (it compiles
once per distinct image size: photos from one camera share one). The log says
how long the run will take after its first steps. Expect a rough model: it
sees a few thousand crops and no pretrained features; the README's "Train
on your own data" gives a measured run.
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s"
  config.model.num_classes = 0  # The dataset's (its metadata).
  config.model.width_divisor = 8
  config.model.dropout_rate = 0.0
  config.init_from = ""  # From scratch ...
  config.scratch_init = "he_normal"
  config.preprocessing = "torchvision"  # ... on inputs near -2..2.

  config.dataset.name = ""  # Required: the --name given to prepare_data.
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"

  config.batch_size = 8
  config.eval_batch_size = 1
  config.num_train_steps = 300
  config.eval_every_steps = 150
  config.log_every_steps = 20
  config.checkpoint.every_steps = 150

  config.input.train_mode = "epochs"
  config.input.crop_size = 128
  config.input.random_mirror = True
  config.input.scale_range = (0.5, 1.0)
  config.input.eval_pad_size = 0  # Exact: native size, any image size.

  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-2
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = "poly"
  config.optim.warmup_steps = 50
  return config
