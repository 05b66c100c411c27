"""nyud-fcn32s-color-d: NYUDv2, 40 classes, colour + depth (early fusion).

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.2): batch 1 at
native size, summed loss, lr 1e-10, momentum 0.99, weight decay 5e-4, trained
on trainval (795 images), evaluated on test (654) every 2000 iterations for
100k (the solve.py loop, 50 x 2000; max_iter says 300k). Input: one 4-channel
array, BGR minus the NYUD mean and log(depth) - 7.844; conv1_1_bgrd starts from
VGG16's conv1_1 (its three input channels copied, the fourth their mean, bias
copied; docs/reference.md §8.2).

Published (CVPR Table 4, docs/reference.md §9.3): FCN-32s RGBD: 30.5 mean IU
(pixel acc. 61.5, mean acc. 42.4, f.w. IU 45.5).

Needs the nyud dataset: python -m fcn_jax.prepare_data --dataset nyud
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/nyud_fcn32s_color_d.py \
      --workdir runs/nyud_fcn32s_color_d
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/nyud.py:color_d.
  return config_families.NYUD.get_config("color_d")
