"""nyud-fcn32s-color: NYUDv2, 40 classes, colour.

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.2): batch 1 at
native size, summed loss, lr 1e-10, momentum 0.99, weight decay 5e-4, trained
on trainval (795 images), evaluated on test (654) every 2000 iterations for
100k (the solve.py loop, 50 x 2000; max_iter says 300k). Input: the colour
image (BGR minus the NYUD mean).

Published (CVPR Table 4, docs/reference.md §9.3): FCN-32s RGB: 29.2 mean IU
(pixel acc. 60.0, mean acc. 42.2, f.w. IU 43.9).

Needs the nyud dataset: python -m fcn_jax.prepare_data --dataset nyud
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/nyud_fcn32s_color.py \
      --workdir runs/nyud_fcn32s_color
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/nyud.py:color.
  return config_families.NYUD.get_config("color")
