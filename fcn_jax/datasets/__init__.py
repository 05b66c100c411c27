"""TFDS builders for segmentation data; importing this registers them.

* ``voc_seg`` (:class:`~fcn_jax.datasets.voc_seg.VocSeg`): PASCAL VOC 2012 +
  SBD from the user's archives.
* ``synthetic_shapes``
  (:class:`~fcn_jax.datasets.synthetic_shapes.SyntheticShapes`): SYNTHETIC
  shapes with the same features, generated locally.
"""

from fcn_jax.datasets import common
from fcn_jax.datasets import synthetic_shapes
from fcn_jax.datasets import voc_seg

SyntheticShapes = synthetic_shapes.SyntheticShapes
VocSeg = voc_seg.VocSeg

BUILDERS = {"voc_seg": VocSeg, "synthetic_shapes": SyntheticShapes}
