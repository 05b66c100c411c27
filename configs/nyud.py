"""NYUDv2 (40 classes), the four reference nets: ``--config configs/nyud.py:ARG``.

ARG (default ``color``): ``color``, ``hha``, ``color_d`` (early fusion,
4-channel input) or ``color_hha`` (late fusion of two streams, each from its
trained single-modality run). The reference "heavy" solver of each
(docs/reference.md §5.1, §5.3, §8.2); what each net is and its published
numbers: ``configs/nyud_fcn32s_<ARG>.py``, the same config under the name it
had first. Built by :data:`fcn_jax.config_families.NYUD`.

Needs the nyud dataset: python -m fcn_jax.prepare_data --dataset nyud
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/nyud.py:hha --workdir runs/nyud_fcn32s_hha
"""

from fcn_jax import config_families


def get_config(arg=None):
  return config_families.NYUD.get_config(arg)
