"""SIFT Flow (two heads: sem 33, geo 3): ``--config configs/siftflow.py:ARG``.

ARG (default ``fcn32s``): ``fcn32s`` (from VGG16), ``fcn16s`` (from the
trained FCN-32s), ``fcn8s`` (from the FCN-16s). The reference "heavy" solver
of each (docs/reference.md §5.1, §5.3, §8.3); what each net is and its
published numbers: ``configs/siftflow_<ARG>.py``, the same config under the
name it had first. Built by :data:`fcn_jax.config_families.SIFT_FLOW`.

Needs the sift_flow dataset: python -m fcn_jax.prepare_data --dataset sift_flow
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/siftflow.py:fcn16s \
      --workdir runs/siftflow_fcn16s
"""

from fcn_jax import config_families


def get_config(arg=None):
  return config_families.SIFT_FLOW.get_config(arg)
