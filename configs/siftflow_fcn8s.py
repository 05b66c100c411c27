"""siftflow-fcn8s: SIFT Flow, one trunk and two heads (sem 33, geo 3).

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.3): batch 1, the
sum of the two unnormalised losses (sem and geo, each ignoring 255, weight 1),
lr 1e-12 (not 1e-14: the reference solver's value), momentum 0.99, trained on
trainval (2,486 images) from the trained siftflow_fcn16s, evaluated on test
(200) every 2000 iterations for 100k (the solve.py loop, 50 x 2000). The
reported metrics are the sem head's; every head's are under ``heads``
(geometric accuracy: ``heads.geo.pixel_acc``).

Published: none for this stride (CVPR Table 5 reports the FCN-16s: 85.2 / 51.7
/ 39.5 / 76.1 and geometric acc. 94.3; docs/reference.md §9.3).

Needs the sift_flow dataset: python -m fcn_jax.prepare_data --dataset sift_flow
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/siftflow_fcn8s.py \
      --workdir runs/siftflow_fcn8s
"""

from fcn_jax import config_families


def get_config():
  # The same as configs/siftflow.py:fcn8s.
  return config_families.SIFT_FLOW.get_config("fcn8s")
