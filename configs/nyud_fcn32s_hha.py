"""nyud-fcn32s-hha: NYUDv2, 40 classes, HHA.

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.2): batch 1 at
native size, summed loss, lr 1e-10, momentum 0.99, weight decay 5e-4, trained
on trainval (795 images), evaluated on test (654) every 2000 iterations for
100k (the solve.py loop, 50 x 2000; max_iter says 300k). Input: the HHA image
(channels in file order minus their means).

Published (CVPR Table 4, docs/reference.md §9.3): FCN-32s HHA: 24.2 mean IU
(pixel acc. 57.1, mean acc. 35.2, f.w. IU 40.4).

Needs the nyud dataset: python -m fcn_jax.prepare_data --dataset nyud
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/nyud_fcn32s_hha.py \
      --workdir runs/nyud_fcn32s_hha
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "nyud_fcn32s_hha"
  config.model.num_classes = 40
  config.init_from = "weights/vgg16_caffe"
  config.preprocessing = "nyud"
  # The reference fine-tunes VGG16 (trained with the ImageNet mean) with
  # NYUD's own mean, which contradicts the mean the VGG16 export records.
  config.force_preprocessing = True
  config.dataset.name = "nyud"
  config.dataset.train_split = "trainval"
  config.dataset.eval_split = "test"
  config.optim.base_lr = 1e-10
  config.num_train_steps = 100_000
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000
  return config
