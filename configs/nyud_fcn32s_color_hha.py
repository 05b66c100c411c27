"""nyud-fcn32s-color-hha: NYUDv2, 40 classes, colour + HHA (late fusion).

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.2): batch 1 at
native size, summed loss, lr 1e-12, momentum 0.99, weight decay 5e-4, trained
on trainval (795 images), evaluated on test (654) every 2000 iterations for
100k (the solve.py loop, 50 x 2000; max_iter says 300k). Input: two full VGG16
streams, color and hha, whose score_fr are averaged (score_fused, coefficients
0.5/0.5) before one upsampler; each stream starts from a trained
single-modality net (its layers L copied to L + 'color' / L + 'hha', as
surgery.transplant; the reference used the colour net at 28k and the HHA net at
60k iterations).

Published (CVPR Table 4, docs/reference.md §9.3): FCN-32s RGB-HHA: 32.8 mean IU
(pixel acc. 64.3, mean acc. 44.9, f.w. IU 48.0).

Needs the nyud dataset: python -m fcn_jax.prepare_data --dataset nyud
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/nyud_fcn32s_color_hha.py \
      --workdir runs/nyud_fcn32s_color_hha
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/nyud.py:color_hha.
  return config_families.NYUD.get_config("color_hha")
