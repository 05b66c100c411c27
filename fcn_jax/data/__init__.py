"""The online input pipeline: TFDS data sources fed by grain.

* :mod:`~fcn_jax.data.input_pipeline`: train and eval iterators of a config.
* :mod:`~fcn_jax.data.data_sources`: the prepared TFDS splits and their metadata.
* :mod:`~fcn_jax.data.sampling`: the reference's sampling order, epochs and host shards.
* :mod:`~fcn_jax.data.augmentations`: crops, mirrors, scales (one geometry per example).
* :mod:`~fcn_jax.data.batch_transforms`: the grain transforms that build a batch.
* :mod:`~fcn_jax.data.input_config`: which features a net reads and writes.
* :mod:`~fcn_jax.data.preprocessing`: mean/scale of the weights' inputs.
"""
