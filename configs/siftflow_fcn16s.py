"""siftflow-fcn16s: SIFT Flow, one trunk and two heads (sem 33, geo 3).

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.3): batch 1, the
sum of the two unnormalised losses (sem and geo, each ignoring 255, weight 1),
lr 1e-12, momentum 0.99, trained on trainval (2,486 images) from the trained
siftflow_fcn32s, evaluated on test (200) every 2000 iterations for 100k (the
solve.py loop, 50 x 2000). The reported metrics are the sem head's; every
head's are under ``heads`` (geometric accuracy: ``heads.geo.pixel_acc``).

Published: FCN-16s: pixel acc. 85.2, mean acc. 51.7, mean IU 39.5, f.w. IU
76.1, geometric acc. 94.3 (CVPR Table 5, docs/reference.md §9.3).

Needs the sift_flow dataset: python -m fcn_jax.prepare_data --dataset sift_flow
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/siftflow_fcn16s.py \
      --workdir runs/siftflow_fcn16s
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/siftflow.py:fcn16s.
  return config_families.SIFT_FLOW.get_config("fcn16s")
