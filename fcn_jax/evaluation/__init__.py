"""Evaluation: the eval step and one pass over a split
(:mod:`~fcn_jax.evaluation.evaluator`), and the FCN metrics
(:mod:`~fcn_jax.evaluation.metrics`).
"""
