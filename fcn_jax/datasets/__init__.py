"""TFDS builders for segmentation data; importing this registers them.

* ``voc_seg`` (:class:`~fcn_jax.datasets.voc_seg.VocSeg`): PASCAL VOC 2012 +
  SBD from the user's archives.
* ``nyud`` (:class:`~fcn_jax.datasets.nyud.Nyud`): NYUDv2, 40 classes,
  colour + HHA + depth, from the reference's ``nyud.tar.gz``.
* ``sift_flow`` (:class:`~fcn_jax.datasets.sift_flow.SiftFlow`): SIFT Flow,
  33 semantic + 3 geometric classes, from ``SiftFlowDataset.zip``.
* ``pascal_context``
  (:class:`~fcn_jax.datasets.pascal_context.PascalContext`): PASCAL-Context,
  59 classes + background, from VOC2010 and the Context annotations.
* ``synthetic_shapes``
  (:class:`~fcn_jax.datasets.synthetic_shapes.SyntheticShapes`): SYNTHETIC
  shapes with the features of ``voc_seg``, generated locally.

The first four read data the user downloaded (``MANUAL_BUILDERS``): they
are built with ``python -m fcn_jax.prepare_data --dataset NAME --manual_dir
DIR`` and share the options of :class:`~fcn_jax.datasets.manual.ManualBuilder`.
"""

from fcn_jax.datasets import common
from fcn_jax.datasets import manual
from fcn_jax.datasets import nyud
from fcn_jax.datasets import pascal_context
from fcn_jax.datasets import sift_flow
from fcn_jax.datasets import synthetic_shapes
from fcn_jax.datasets import voc_seg

Nyud = nyud.Nyud
PascalContext = pascal_context.PascalContext
SiftFlow = sift_flow.SiftFlow
SyntheticShapes = synthetic_shapes.SyntheticShapes
VocSeg = voc_seg.VocSeg

MANUAL_BUILDERS = {"voc_seg": VocSeg, "nyud": Nyud, "sift_flow": SiftFlow,
                   "pascal_context": PascalContext}
BUILDERS = {**MANUAL_BUILDERS, "synthetic_shapes": SyntheticShapes}
