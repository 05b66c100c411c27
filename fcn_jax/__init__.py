"""fcn_jax: Fully Convolutional Networks for Semantic Segmentation in JAX/Flax.

A reference-quality port of Long, Shelhamer & Darrell's FCN-32s/16s/8s that
matches the Caffe reference (see ``README.md``) and runs data-parallel on one
CPU, many GPUs or a TPU pod.
"""

__version__ = "0.1.0"
