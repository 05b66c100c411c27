"""PASCAL-Context (59 classes + background): ``--config configs/pascalcontext.py:ARG``.

ARG (default ``fcn32s``): ``fcn32s`` (from VGG16), ``fcn16s`` (from the
trained FCN-32s), ``fcn8s`` (from the FCN-16s). The reference "heavy" solver
of each (docs/reference.md §5.1, §5.3, §8.4); what each net is:
``configs/pascalcontext_<ARG>.py``, the same config under the name it had
first. Built by :data:`fcn_jax.config_families.PASCAL_CONTEXT`.

Needs the pascal_context dataset: python -m fcn_jax.prepare_data --dataset
pascal_context --manual_dir DIR (until then training stops with that
instruction).

  python -m fcn_jax.main --config configs/pascalcontext.py:fcn8s \
      --workdir runs/pascalcontext_fcn8s
"""

from fcn_jax import config_families


def get_config(arg=None):
  return config_families.PASCAL_CONTEXT.get_config(arg)
