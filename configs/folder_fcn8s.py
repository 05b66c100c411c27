r"""FCN-8s fine-tuned on your own folder dataset, with the modern recipe.

First build the dataset from your images/ and masks/ (see
fcn_jax/datasets/folder.py for the layout)::

  python -m fcn_jax.prepare_data --dataset folder --manual_dir ~/data/cats \
      --name my_cats --data_dir ~/tensorflow_datasets

then train on it by name::

  python -m fcn_jax.main --config configs/folder_fcn8s.py \
      --workdir runs/my_cats_fcn8s --config.dataset.name=my_cats \
      --config.dataset.data_dir=~/tensorflow_datasets

The class count comes from the dataset (``model.num_classes = 0``). Trained
all at once from the converted VGG16 (``weights/vgg16_caffe``, see the
README's "Pretrained weights"); to start from the released VOC FCN-8s
instead, pass ``--config.init_from=weights/fcn8s_heavy_pascal``: the trunk is
copied and, when your class count is not 21, the score layers start afresh
(zero) and the upsamplers bilinear. As configs/voc_fcn8s_modern.py: the
normalised loss, SGD momentum 0.9 with warmup + poly, random rescaling,
mirroring and 320x320 crops, bfloat16; fewer steps, sized for a few thousand
images (set ``num_train_steps`` to about 30 epochs of your data:
``30 * num_train_images / batch_size``).
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "fcn8s"
  config.model.num_classes = 0  # The dataset's (its metadata).
  config.model.dtype = "bfloat16"
  config.init_from = "weights/vgg16_caffe"

  config.dataset.name = ""  # Required: the --name given to prepare_data.
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"

  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 8000
  config.eval_every_steps = 1000
  config.checkpoint.every_steps = 1000

  config.input.train_mode = "epochs"
  config.input.crop_size = 320
  config.input.random_mirror = True
  config.input.scale_range = (0.5, 2.0)
  config.input.eval_pad_size = 512
  config.input.num_workers = 4

  config.optim.loss_normalization = "valid"
  config.optim.base_lr = 1e-3
  config.optim.momentum = 0.9
  config.optim.schedule = "poly"
  config.optim.warmup_steps = 300
  return config
