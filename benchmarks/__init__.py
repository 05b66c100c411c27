"""Speed benchmarks for fcn_jax (training and inference throughput, MFU)."""
