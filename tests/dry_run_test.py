"""The dry run (fcn_jax.aot): topologies, the fit decision, the search, the CLI.

Everything but the real-TPU test runs without libtpu: fake compiled objects, or
the real steps compiled for the 8 fake CPU devices (``--topology=cpu``). The
real-TPU test compiles a tiny FCN for a real TPU topology (v5e:2x2); it is
skipped unless libtpu is installed (``pip install -e ".[tpu]"``), and takes a
few minutes of one CPU core:

  python -m pytest tests/dry_run_test.py -k real_tpu
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import pytest

from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax import aot
from fcn_jax.aot import accelerators
from fcn_jax.aot import measure
from fcn_jax.aot import report
from fcn_jax.aot import search
from fcn_jax.aot import steps
from fcn_jax.aot import targets

REPO = pathlib.Path(__file__).resolve().parents[1]
GIB = aot.GIB
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def _tiny_config(parallel="pmap"):
  config = default_config.get_config()
  config.parallel = parallel
  config.model.name = "fcn32s"  # The quickest to compile.
  config.model.width_divisor = 64
  config.batch_size = 16
  config.eval_batch_size = 8
  config.input.train_mode = "epochs"  # Crops.
  config.input.crop_size = 32
  config.input.eval_pad_size = 48
  return config


def test_topology_names():
  assert accelerators.tpu_topology_name("v4-8") == "v4:2x2x1"
  assert accelerators.tpu_topology_name("v5e-16") == "v5e:4x4"
  assert accelerators.tpu_topology_name("v5litepod-16") == "v5e:4x4"
  assert accelerators.tpu_topology_name("v6e-8") == "v6e:2x4"
  assert accelerators.tpu_topology_name("v5e:8x8") == "v5e:8x8"
  assert accelerators.tpu_topology_name("v4:2x2x4") == "v4:2x2x4"
  with pytest.raises(aot.DryRunError,
                     match=r"--topology=v5e-12: not a TPU accelerator type"):
    accelerators.tpu_topology_name("v5e-12")


def test_memory_by_device_kind():
  chip = types.SimpleNamespace(device_kind="TPU v5 lite", platform="tpu")
  assert targets.hbm_bytes(chip) == 16 * GIB
  assert targets.hbm_bytes(types.SimpleNamespace(
      device_kind="TPU v4", platform="tpu")) == 32 * GIB
  # CUDA's figure for an 80 GB H100: 79.1 GiB.
  assert targets.hbm_bytes(types.SimpleNamespace(
      device_kind="NVIDIA H100 80GB HBM3", platform="gpu")) == 84_942_979_072
  with pytest.raises(aot.DryRunError, match="pass it as --hbm_gib"):
    targets.hbm_bytes(types.SimpleNamespace(device_kind="TPU v9",
                                            platform="tpu"))


class _FakeCompiled:
  """What ``jax.stages.Compiled`` offers the dry run."""

  def __init__(self, temp, cost):
    self.temp, self.cost = temp, cost

  def memory_analysis(self):
    return types.SimpleNamespace(
        argument_size_in_bytes=3 * GIB, output_size_in_bytes=2 * GIB,
        alias_size_in_bytes=2 * GIB, temp_size_in_bytes=self.temp,
        generated_code_size_in_bytes=GIB // 4)

  def cost_analysis(self):
    return self.cost


class _FakeStep:
  def __init__(self, compiled=None, error=None):
    self.compiled, self.error = compiled, error

  def lower(self, *args):
    del args
    return self

  def compile(self):
    if self.error:
      raise self.error
    return self.compiled


def _compile(step, capacity=16 * GIB):
  return measure.compile_step("train", step, (), per_chip_batch=2,
                              global_batch=32, image_size=320,
                              capacity_bytes=capacity)


def test_fit_decision_and_report():
  # Arguments 3 + unaliased outputs 0 + temp + code 0.25 GiB.
  cost = {"flops": 2.5e12, "optimal_seconds": -1.0}
  fits = _compile(_FakeStep(_FakeCompiled(12 * GIB, cost)))
  assert fits.total_bytes == int(15.25 * GIB) and fits.fits
  assert fits.flops == 2.5e12
  text = fits.describe()
  assert "total 15.25 GiB of 16.00 GiB (headroom 0.75 GiB)" in text
  assert "2.500 TFLOP per step" in text
  assert "optimal" not in text and "-1" not in text  # Not a time.
  over = _compile(_FakeStep(_FakeCompiled(13 * GIB, [cost])))  # Older JAX.
  assert not over.fits and over.flops == 2.5e12
  assert "over by 0.25 GiB" in over.describe()
  message = report.failure_message(
      {"train": over, "eval": fits, "fits": False}, num_chips=16)
  assert message.startswith(
      "does not fit: the train step needs 16.25 GiB per chip of 16.00 GiB;")
  assert "--find_max_batch" in message
  found = report.failure_message(
      {"train": over, "eval": fits, "fits": False, "max_per_chip_batch": 1},
      num_chips=16)
  assert found.endswith("the largest per-chip training batch that fits is 1: "
                        "--config.batch_size=16.")


def test_out_of_memory_compile_errors_do_not_fit_others_raise():
  oom = RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. "
                     "Ran out of memory in memory space hbm. Used 20.5G of "
                     "15.75G hbm. Exceeded hbm capacity by 4.75G.\nmore")
  report = _compile(_FakeStep(error=oom))
  assert not report.fits
  assert report.error.startswith("RESOURCE_EXHAUSTED: XLA:TPU compile")
  assert search._bytes_used(report) == int(20.5 * GIB)
  assert "does not fit in 16.00 GiB per chip" in report.describe()
  with pytest.raises(TypeError, match="unrelated"):
    _compile(_FakeStep(error=TypeError("unrelated")))


def _linear_probe(fixed, per_image, capacity, calls, quote_oom=True):
  """A step whose memory is ``fixed + per_image * batch`` (temp the latter)."""

  def probe(batch):
    calls.append(batch)
    report = measure.StepReport(
        name="train", per_chip_batch=batch, global_batch=batch,
        image_size=320, capacity_bytes=capacity,
        argument_bytes=fixed, temp_bytes=per_image * batch)
    if not report.fits:  # The compiler gives up, saying by how much.
      used = (fixed + per_image * batch) / GIB
      report.error = (f"Ran out of memory in memory space hbm. Used {used:.2f}"
                      f"G of {capacity / GIB:.2f}G hbm." if quote_oom
                      else "RESOURCE_EXHAUSTED")
    return report

  return probe


@pytest.mark.parametrize("start", [1, 3, 40, 200])
@pytest.mark.parametrize("quote_oom", [True, False])
def test_find_max_batch_finds_the_largest_that_fits(start, quote_oom):
  fixed, per_image, capacity = GIB, 700 << 20, 16 * GIB
  want = (capacity - fixed) // per_image  # 21, naively.
  calls = []
  largest, reports = search.find_max_batch(
      _linear_probe(fixed, per_image, capacity, calls, quote_oom), start)
  assert largest == want == 21
  assert reports[largest].fits and not reports[largest + 1].fits
  assert len(calls) == len(set(calls))  # No batch compiled twice.
  assert len(calls) <= 8


@pytest.mark.parametrize("max_probes", [1, 2, 3])
def test_find_max_batch_with_a_probe_budget_gives_a_true_lower_bound(
    max_probes):
  fixed, per_image, capacity = GIB, 700 << 20, 16 * GIB
  calls = []
  largest, reports = search.find_max_batch(
      _linear_probe(fixed, per_image, capacity, calls), 2,
      max_probes=max_probes)
  assert len(calls) == max_probes
  assert 2 <= largest <= 21 and reports[largest].fits  # Fits, and <= exact.
  low, high = search.search_bounds(reports)
  assert low == largest
  assert high is None or (high > 21 and not reports[high].fits)
  summary = report.search_summary(
      {"max_per_chip_batch": largest, "first_failing_batch": high,
       "max_per_chip_batch_exact": high == largest + 1,
       "probes": [reports[b] for b in sorted(reports)]}, num_chips=4)
  if high != largest + 1:
    assert f"at least {largest} (--config.batch_size={4 * largest})" in (
        summary) and "--max_probes" in summary


def test_find_max_batch_when_nothing_fits():
  calls = []
  largest, _ = search.find_max_batch(
      _linear_probe(17 * GIB, GIB, 16 * GIB, calls), 4)
  assert largest == 0 and calls == [4, 2, 1]  # Halving.


def test_batches_must_split_over_every_chip():
  assert steps.per_chip(32, 16, "batch_size") == 2
  with pytest.raises(aot.DryRunError, match=(
      r"config.batch_size=24 does not split over the 16 chips .* pass "
      r"--config.batch_size=16 or 32.")):
    steps.per_chip(24, 16, "batch_size")
  config = _tiny_config()
  config.input.crop_size = 0  # Native size without buckets: one per chip.
  config.input.buckets = "none"
  with pytest.raises(aot.DryRunError, match="pass --config.batch_size=8"):
    steps.dry_run(config, jax.devices(), capacity=GIB)


@pytest.fixture(scope="module")
def cpu_results():
  """The real steps compiled for the 8 CPU devices, pmap and jit."""
  return {mode: steps.dry_run(_tiny_config(mode), jax.devices(),
                                capacity=GIB, search=False)
          for mode in ("pmap", "jit")}


def test_dry_run_compiles_both_steps_with_pmap_and_jit(cpu_results):
  for mode, results in cpu_results.items():
    train, evaluation = results["train"], results["eval"]
    assert results["fits"], mode
    assert (train.per_chip_batch, train.global_batch, train.image_size) == (
        2, 16, 32)
    assert (evaluation.per_chip_batch, evaluation.image_size) == (1, 48)
    assert train.temp_bytes > 0 and train.flops > 0 and evaluation.flops > 0
  # The same program per device either way.
  pmap, jit = cpu_results["pmap"], cpu_results["jit"]
  assert jit["train"].flops == pytest.approx(pmap["train"].flops, rel=0.02)
  assert jit["eval"].flops == pytest.approx(pmap["eval"].flops, rel=0.02)


def _cli(*args, env_extra=None):
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env.update(env_extra or {})
  return subprocess.run(
      [sys.executable, "-m", "fcn_jax.dry_run",
       "--config", str(REPO / "configs" / "quickstart.py"), *args],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


TINY = ("--config.model.name=fcn32s", "--config.model.width_divisor=64", "--config.batch_size=8",
        "--config.eval_batch_size=8", "--config.input.crop_size=32",
        "--config.input.eval_pad_size=32")


def test_cli_fits_and_writes_json(tmp_path):
  out = tmp_path / "dry_run.json"
  run = _cli("--topology=cpu", "--hbm_gib=1", f"--json={out}", *TINY)
  assert run.returncode == 0, run.stderr
  assert "8 x cpu (1.00 GiB each)" in run.stdout
  assert "train step: 1 image(s) of 32x32 per chip (global batch 8)" in (
      run.stdout)
  assert run.stdout.rstrip().endswith("fits.")
  record = json.loads(out.read_text())
  assert record["chips"] == 8 and record["train"]["fits"]
  assert record["train"]["total_bytes"] == (
      record["train"]["argument_bytes"] + record["train"]["output_bytes"]
      - record["train"]["alias_bytes"] + record["train"]["temp_bytes"]
      + record["train"]["code_bytes"])


def test_cli_does_not_fit_exits_1_with_one_line_and_the_largest_batch(
    tmp_path):
  out = tmp_path / "dry_run.json"
  # A budget below the tiny net's batch-6 step (donated state, tiled pooling).
  run = _cli("--topology=cpu", "--hbm_gib=0.03", "--find_max_batch", *TINY,
             "--config.batch_size=48", f"--json={out}")
  assert run.returncode == 1
  error = run.stderr.strip().splitlines()[-1]
  assert error.startswith("error: does not fit: the train step needs ")
  assert "Traceback" not in run.stderr
  record = json.loads(out.read_text())
  largest = record["max_per_chip_batch"]
  assert 1 <= largest < 6
  assert error.endswith(f"the largest per-chip training batch that fits is "
                        f"{largest}: --config.batch_size={8 * largest}.")
  assert f"largest per-chip training batch that fits: {largest}" in run.stdout
  probes = {p["per_chip_batch"]: p for p in record["probes"]}
  assert probes[largest]["fits"] and not probes[largest + 1]["fits"]
  assert probes[largest]["total_bytes"] <= 0.03 * GIB
  # Per-chip FLOPs and temporaries grow with the per-chip batch.
  small, big = probes[min(probes)], probes[max(probes)]
  ratio = big["per_chip_batch"] / small["per_chip_batch"]
  assert big["flops"] == pytest.approx(ratio * small["flops"], rel=0.05)
  assert big["temp_bytes"] > small["temp_bytes"]


def test_cli_bad_input_is_one_line():
  run = _cli("--topology=v5e-12", *TINY)
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert "error: --topology=v5e-12: not a TPU accelerator type" in run.stderr
  run = _cli("--topology=cpu", *TINY, "--config.batch_size=12")
  assert ("error: config.batch_size=12 does not split over the 8 chips"
          in run.stderr)
  run = _cli("--topology=cpu", *TINY, "--config.parallel=pjit")
  assert "error: config.parallel must be one of ('pmap', 'jit')" in run.stderr


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed")
def test_cli_without_libtpu_says_how_to_get_it():
  run = _cli("--topology=v5e-16", *TINY)
  assert run.returncode == 2
  assert "libtpu (the TPU compiler) is not installed" in run.stderr
  assert f"'jax[tpu]=={jax.__version__}'" in run.stderr


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install -e "
                    "'.[tpu]' (or see the module docstring)")
def test_real_tpu_compile_of_a_tiny_model():
  target = targets.make_target("v5e-4")
  devices = target.devices
  assert len(devices) == 4 and target.device_kind == "TPU v5 lite"
  config = _tiny_config()
  config.batch_size = config.eval_batch_size = 8
  results = steps.dry_run(config, devices, capacity=target.capacity_bytes)
  assert results["fits"]
  train = results["train"]
  assert train.per_chip_batch == 2 and train.capacity_bytes == 16 * GIB
  # Donated state: the new state reuses the old one's buffers on TPU.
  assert train.alias_bytes > 0 and train.flops > 0


def test_native_size_configs_compile_at_the_largest_bucket_with_sizes():
  config = _tiny_config()
  config.input.crop_size = 0
  config.batch_size = 8
  run = steps.resolve(config)
  assert steps.native_shape(run, 500) == (500, 500)  # auto: the guess.
  assert run.train_bucketed
  config.input.buckets = "333x500,500x375"
  run = steps.resolve(config)
  assert steps.native_shape(run, 500) == (500, 375)
  assert run.train_bucketed
  shapes = steps.batch_shapes(run.spec, 8, 2, (500, 375), with_valid=False,
                              with_sizes=True)
  assert shapes["image"].shape == (8, 2, 500, 375, 3)
  assert shapes["size"].shape == (8, 2, 2)
  config.input.buckets = "none"
  config.batch_size = 1
  assert not steps.resolve(config).train_bucketed


def test_native_size_takes_one_side_or_height_by_width():
  config = _tiny_config()
  config.input.crop_size = 0
  config.batch_size = 8
  run = steps.resolve(config)
  assert steps.native_shape(run, "256") == (256, 256)
  assert steps.native_shape(run, "480x640") == (480, 640)
  for bad in ("480x", "0x640", "big", "1x2x3"):
    with pytest.raises(errors.UserError, match="--native_size"):
      steps.native_shape(run, bad)


def test_gpu_topologies():
  assert accelerators.is_gpu("h100") and accelerators.is_gpu("A100-40:8")
  assert not accelerators.is_gpu("v5e-16") and not accelerators.is_gpu("cpu")
  for text, (model, hosts, per_host) in {
      "h100": ("h100", 1, 1), "h100:8": ("h100", 1, 8),
      "a100-80:8": ("a100-80", 1, 8), "h200:2x8": ("h200", 2, 8),
      " A100-40 ": ("a100-40", 1, 1)}.items():
    gpus = accelerators.gpu_topology(text)
    assert (gpus.model, gpus.hosts, gpus.gpus_per_host) == (
        model, hosts, per_host), text
  assert accelerators.gpu_topology("h100:2x8").name == "h100:2x8"
  for bad in ("h100:0", "h100:8x", "h100:x8", "h101"):
    with pytest.raises(aot.DryRunError, match="--topology="):
      accelerators.gpu_topology(bad)
  # The target config states the card's own facts.
  text = accelerators.GPUS["a100-40"].target_config()
  assert "device_memory_size: 42331013120" in text
  assert "cuda_compute_capability { major: 8 minor: 0 }" in text
  assert 'device_description_str: "NVIDIA A100-SXM4-40GB"' in text


def test_gpu_capacity_is_jax_preallocated_share(monkeypatch):
  monkeypatch.delenv("XLA_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  assert targets.gpu_memory_fraction() == 0.75
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  assert targets.gpu_memory_fraction() == 0.9
  monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "half")
  with pytest.raises(aot.DryRunError, match="XLA_CLIENT_MEM_FRACTION='half'"):
    targets.gpu_memory_fraction()


def test_gpu_without_the_plugin_says_how_to_get_it(monkeypatch):
  monkeypatch.setattr(targets, "gpu_plugin_installed", lambda: False)
  with pytest.raises(aot.DryRunError) as error:
    targets.make_target("h100:8")
  message = str(error.value)
  assert "\n" not in message
  assert "pip install -e '.[gpu-aot]'" in message
  assert f"'jax-cuda12-plugin=={jax.__version__}'" in message


@pytest.mark.parametrize("parallel", ["pmap", "jit"])
def test_flops_before_optimisation_match_the_compiled_count(parallel):
  """GPUs report the lowered program's FLOPs per device; on the CPU, which
  counts the compiled one too, the two agree where convolutions dominate
  (at full width to 0.1%; a narrow net's elementwise work counts more
  before fusion)."""
  config = _tiny_config(parallel)
  config.model.width_divisor = 8
  built = steps.setup(config)
  devices = jax.devices()[:2]
  step = steps.step_lib.make_train_fn(built.model, built.tx, built.run,
                                      devices)
  batch = steps.batch_shapes(built.spec, len(devices), 1, 64,
                             with_valid=False)
  lowered = step.lower(built.state, batch)
  compiled_flops = lowered.compile().cost_analysis()["flops"]
  assert measure.lowered_flops(lowered) == pytest.approx(compiled_flops,
                                                         rel=0.02)
