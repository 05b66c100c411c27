"""Inference on images of any size.

* :mod:`~fcn_jax.inference.predictor`: :class:`Predictor`, the modes (fast, exact, slide).
* :mod:`~fcn_jax.inference.sliding_window`: windows and their blending.
* :mod:`~fcn_jax.inference.tta`: test-time augmentation (flips, scales).
"""
