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

from fcn_jax import config_families


def get_config():
  # The same as configs/nyud.py:hha.
  return config_families.NYUD.get_config("hha")
