"""The quickstart net's train and eval steps compiled for NVIDIA H100s.

No GPU is needed: JAX's CUDA plugin (``pip install -e ".[gpu-aot]"``)
compiles for a card described by its target config
(:mod:`fcn_jax.aot.targets`). This is the suite's only check that every
layer lowers and compiles for CUDA (cuDNN convolutions included), for both
``config.parallel`` modes on one and two GPUs. Skipped when the plugin is
not installed; about half a minute of one core when it is.
"""

import importlib.util
import pathlib

import pytest

from fcn_jax import models
from fcn_jax.aot import accelerators
from fcn_jax.aot import steps
from fcn_jax.aot import targets

REPO = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not targets.gpu_plugin_installed(),
    reason="needs the CUDA compiler plugin: pip install -e '.[gpu-aot]'")


def _quickstart(parallel):
  spec = importlib.util.spec_from_file_location(
      "quickstart", REPO / "configs" / "quickstart.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.parallel = parallel
  return config


MODES = [(parallel, gpus) for parallel in ("pmap", "jit") for gpus in (1, 2)]


@pytest.fixture(scope="module")
def results():
  """Both steps compiled for 1 and 2 H100s, pmap and jit."""
  out = {}
  for parallel, gpus in MODES:
    target = targets.make_target(f"h100:{gpus}")
    assert [d.device_kind for d in target.devices] == [
        "NVIDIA H100 80GB HBM3"] * gpus
    assert target.kind == "gpu" and target.devices[0].platform == "gpu"
    with models.layers.target_platform("gpu"):
      out[parallel, gpus] = steps.dry_run(_quickstart(parallel),
                                          target.devices,
                                          capacity=target.capacity_bytes)
  return out


@pytest.mark.parametrize("parallel,gpus", MODES)
def test_quickstart_steps_compile_for_h100(results, parallel, gpus):
  compiled = results[parallel, gpus]
  train, evaluation = compiled["train"], compiled["eval"]
  assert compiled["fits"]
  assert (train.per_chip_batch, train.image_size) == (8 // gpus, 64)
  assert (evaluation.per_chip_batch, evaluation.image_size) == (8 // gpus,
                                                                 128)
  for report in (train, evaluation):
    assert report.flops_counted == "lowered" and report.flops > 0
    assert report.argument_bytes > 0 and report.temp_bytes > 0
  # The new train state reuses the donated one's buffers on the GPU.
  assert train.alias_bytes > 0


def test_per_gpu_work_halves_on_two_gpus_in_either_mode(results):
  for name in ("train", "eval"):
    one = results["pmap", 1][name].flops
    assert results["jit", 1][name].flops == pytest.approx(one, rel=0.02)
    for parallel in ("pmap", "jit"):
      assert results[parallel, 2][name].flops == pytest.approx(one / 2,
                                                               rel=0.05)


def test_the_train_step_is_cuda_code_with_cudnn_convolutions():
  target = targets.make_target("h100")
  with models.layers.target_platform("gpu"):
    built = steps.setup(_quickstart("jit"))
    step = steps.step_lib.make_train_fn(built.model, built.tx, built.run,
                                        target.devices)
    batch = steps.batch_shapes(built.spec, 1, 8, 64, with_valid=False)
    compiled = step.lower(built.state, batch).compile()
  text = compiled.as_text()
  assert "__cudnn$conv" in text  # The convolutions are cuDNN calls.
  assert compiled.cost_analysis() is None  # Hence FLOPs before optimisation.


def test_every_gpu_model_gives_its_devices_and_memory(monkeypatch):
  monkeypatch.delenv("XLA_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  for model, spec in accelerators.GPUS.items():
    target = targets.make_target(f"{model}:2x4")
    assert target.name == f"{model}:2x4" and target.hosts == 2
    assert [d.process_index for d in target.devices] == [0] * 4 + [1] * 4
    assert {d.device_kind for d in target.devices} == {spec.device_kind}
    assert target.memory_bytes == spec.memory_bytes
    assert target.capacity_bytes == int(0.75 * spec.memory_bytes)
    assert "lower bound" in target.caveat
