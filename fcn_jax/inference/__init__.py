"""Inference on images of any size.

* :mod:`~fcn_jax.inference.predictor`: :class:`Predictor`, the modes (fast,
  exact, slide).
* :mod:`~fcn_jax.inference.sliding_window`: windows and their blending.
* :mod:`~fcn_jax.inference.tta`: test-time augmentation (flips, scales).
* :mod:`~fcn_jax.inference.shift_stitch`: shift-and-stitch.

What ``python -m fcn_jax.predict`` does around a predictor:

* :mod:`~fcn_jax.inference.inputs`: finding and decoding images.
* :mod:`~fcn_jax.inference.outputs`: output names, checks and writers.
* :mod:`~fcn_jax.inference.driver`: the batch driver and memory policy.
* :mod:`~fcn_jax.inference.command_line`: the inference commands' flags.

And :mod:`~fcn_jax.inference.exported`: running an artifact of
``python -m fcn_jax.export`` with JAX alone. This package imports nothing
itself, so that the loader needs neither the model code nor Flax.
"""
