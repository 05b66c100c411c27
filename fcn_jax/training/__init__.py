"""Training: the state (:mod:`~fcn_jax.training.state`), the step
(:mod:`~fcn_jax.training.step`), the loop (:mod:`~fcn_jax.training.loop`) and
Caffe's SGD (:mod:`~fcn_jax.training.optim`).
"""
