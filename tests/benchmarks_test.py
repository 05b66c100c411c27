"""The benchmark machinery: FLOP counts, timing, the train step, the chart."""

import json
import time

import jax
import jax.numpy as jnp
from matplotlib import colors
import numpy as np
from PIL import Image
import pytest

# pylint: disable=g-import-not-at-top
from benchmarks import common
from benchmarks import flops
from benchmarks import jax_bench
from benchmarks import plot
from fcn_jax import models
from fcn_jax import parallel
from tests.helpers import jit_apply

# docs/reference.md §10: weights per layer (21 classes).
SPEC_WEIGHTS = {
    "conv1_1": 1_728, "conv1_2": 36_864, "conv2_1": 73_728,
    "conv2_2": 147_456, "conv3_1": 294_912, "conv3_2": 589_824,
    "conv3_3": 589_824, "conv4_1": 1_179_648, "conv4_2": 2_359_296,
    "conv4_3": 2_359_296, "conv5_1": 2_359_296, "conv5_2": 2_359_296,
    "conv5_3": 2_359_296, "fc6": 102_760_448, "fc7": 16_777_216,
    "score_fr": 86_016, "score_pool4": 10_752, "score_pool3": 5_376,
    "upscore2": 7_056, "upscore_pool4": 7_056, "upscore8": 112_896,
}
# docs/reference.md §11, FCN-8s at H = W = 500: the side of each layer's output
# (convolutions) or input (upsamplers: every input pixel scatters a kernel).
SPEC_SIDES_500 = {
    "conv1": 698, "conv2": 349, "conv3": 175, "conv4": 88, "conv5": 44,
    "fc6": 16, "fc7": 16, "score_fr": 16, "score_pool4": 44,
    "score_pool3": 88, "upscore2": 16, "upscore_pool4": 34, "upscore8": 70,
}


def test_fcn8s_forward_flops_from_the_spec_tables():
  want = 0
  for layer, weights in SPEC_WEIGHTS.items():
    side = SPEC_SIDES_500.get(layer, SPEC_SIDES_500.get(layer[:5]))
    want += 2 * weights * side * side
  got = flops.model_flops("fcn8s", 500, 500)
  assert got == want
  assert 360e9 < got < 366e9  # "about 362 GFLOP" (issue 8).


def test_layer_shapes_follow_the_spec_at_500():
  layers = {l.name: l for l in flops.fcn_layers("fcn8s", 500, 500)}
  assert layers["fc7"].out_size == (16, 16)
  assert layers["upscore2"].out_size == (34, 34)
  assert layers["upscore_pool4"].out_size == (70, 70)
  assert layers["upscore8"].out_size == (568, 568)
  assert {l.name: l for l in flops.fcn_layers("fcn32s", 500, 375)
         }["upscore"].out_size == (544, 416)


def test_depthwise_upsamplers_count_one_channel_per_class():
  dense = {l.name: l.macs for l in flops.fcn_layers("fcn16s", 224, 224)}
  depthwise = {l.name: l.macs for l in flops.fcn_layers(
      "fcn16s", 224, 224, upsample_mode="depthwise")}
  for name in ("upscore2", "upscore16"):
    assert dense[name] == 21 * depthwise[name]
  assert dense["fc6"] == depthwise["fc6"]


def test_train_flops_skip_image_gradient_and_frozen_kernels():
  layers = flops.fcn_layers("fcn8s", 64, 64)
  forward = flops.forward_flops(layers)
  macs = {l.name: l.macs for l in layers}
  frozen = macs["upscore2"] + macs["upscore_pool4"] + macs["upscore8"]
  assert flops.train_flops(layers) == 3 * forward - 2 * macs["conv1_1"] - 2 * frozen
  learned = flops.fcn_layers("fcn8s", 64, 64, learn_upsampling=True)
  assert flops.train_flops(learned) == flops.train_flops(layers) + 2 * (
      macs["upscore2"] + macs["upscore_pool4"])


@pytest.mark.parametrize("upsample_mode", ["dense", "depthwise"])
def test_xla_cost_analysis_agrees_with_analytic_count(upsample_mode):
  # XLA skips the taps that fall in the zero padding; at 224x224 they are
  # under 3% of the work, so both counts agree within that.
  model = models.create_model("fcn8s", upsample_mode=upsample_mode)
  variables = jax.eval_shape(lambda: models.init_variables(model))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  compiled = jax.jit(model.apply).lower(variables, images).compile()
  xla = flops.xla_flops(compiled)
  analytic = flops.model_flops("fcn8s", 224, 224,
                               upsample_mode=upsample_mode)
  assert xla is not None
  assert 0.97 < xla / analytic <= 1.0


class _SleepyRunner:
  """A runner whose step sleeps; records the order it is called in."""

  def __init__(self, label, seconds, log):
    self.label, self.seconds, self.log = label, seconds, log

  def run(self, steps):
    start = time.perf_counter()
    for _ in range(steps):
      time.sleep(self.seconds)
    self.log.append(self.label)
    return time.perf_counter() - start


def test_interleaved_timing_takes_turns_and_reports_per_step_seconds():
  log = []
  runners = [_SleepyRunner("a", 0.004, log), _SleepyRunner("b", 0.012, log)]
  samples = common.time_interleaved(runners, repeats=3,
                                    min_repeat_seconds=0.03)
  assert log == ["a", "b"] + ["a", "b"] * 3  # Sizing run, then rounds.
  assert len(samples["a"]) == len(samples["b"]) == 3
  assert all(0.004 <= s < 0.012 for s in samples["a"])
  assert all(0.012 <= s < 0.036 for s in samples["b"])


TINY_ROW = common.Row("fcn8s", 40, "float32", "dense", 2, width_divisor=16)


def _naive_valid_loss(logits, labels):
  """Mean softmax cross-entropy over the pixels not labelled 255 (NumPy)."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None],
                              -1)[..., 0]
  return -picked[valid].mean()


def _tiny_batch():
  images = common.random_images(TINY_ROW.batch, TINY_ROW.size)
  labels = common.random_labels(TINY_ROW.batch, TINY_ROW.size)
  labels[:, :20] = 255  # Ignored pixels.
  return images, labels


def test_train_config_is_the_default_with_the_benchmark_settings():
  config = jax_bench.train_config(TINY_ROW)
  assert config.optim.loss_normalization == "valid"
  assert config.optim.momentum == 0.9
  assert config.optim.weight_decay == 5e-4  # docs/reference.md §5.2 defaults.
  assert config.optim.bias_lr_mult == 2.0
  assert config.model.dropout_rate == models.DROPOUT_RATE
  assert (config.model.name, config.model.width_divisor,
          config.batch_size) == ("fcn8s", 16, 2)


def test_train_step_is_the_real_one():
  config = jax_bench.train_config(TINY_ROW, learning_rate=1e-3)
  config.model.dropout_rate = 0.0  # So the loss can be recomputed.
  state, step, devices = jax_bench.create_train_step(config)
  assert len(devices) == 1
  model = models.create_model("fcn8s", width_divisor=16)
  before = jax.tree_util.tree_map(np.asarray, state.params)
  images, labels = _tiny_batch()
  batch = parallel.shard({"image": images, "label": labels}, 1)

  state, metrics = step(state, batch)
  logits = jit_apply(model, {"params": before}, jnp.asarray(images))
  np.testing.assert_allclose(float(metrics["loss"]),
                             _naive_valid_loss(logits, labels), rtol=1e-4)
  assert int(state.step) == 1
  assert set(model.frozen_layers()) == {"upscore2", "upscore_pool4",
                                        "upscore8"}
  for layer in before:
    for name, value in before[layer].items():
      after = np.asarray(state.params[layer][name])
      if layer in model.frozen_layers():
        np.testing.assert_array_equal(after, value)
      else:
        assert not np.array_equal(after, value), f"{layer}/{name}"

  losses = [float(metrics["loss"])]
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]


def test_train_benchmark_end_to_end_with_host_feed(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "CPU_PEAK_MATMUL_SIZE", 256)
  output = tmp_path / "result.json"
  argv = ["--models", "fcn8s", "--sizes", "40", "--batch-sizes", "2",
          "--width-divisor", "16", "--repeats", "2", "--feed", "host",
          "--no-donate", "--min-repeat-seconds", "0", "--output", str(output)]
  from benchmarks import train_step
  common.main("train", "40", train_step.make_runners, "default", argv,
              extra_flags=train_step.add_train_flags)
  row, = json.loads(output.read_text())["rows"]
  jax_result = row["runners"]["fcn_jax"]
  assert (jax_result["feed"], jax_result["donate"]) == ("host", False)
  assert len(jax_result["seconds_per_step_samples"]) == 2
  # XLA counted the backward pass too: about the analytic train count (less
  # the taps in the zero padding, a large share at 40x40).
  train_flops = flops.train_flops(flops.fcn_layers(
      "fcn8s", 40, 40, width_divisor=16, upsample_mode="depthwise"))
  assert 0.8 < row["xla_flops_per_image"] / train_flops < 1.1


def test_inference_benchmark_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "CPU_PEAK_MATMUL_SIZE", 256)
  output = tmp_path / "result.json"
  argv = ["--models", "fcn8s", "--sizes", "48", "--batch-sizes", "1,2",
          "--width-divisor", "16", "--repeats", "2",
          "--min-repeat-seconds", "0", "--output", str(output)]
  from benchmarks import inference
  common.main("inference", "48", inference.make_runners, "default", argv)
  results = json.loads(output.read_text())
  assert results["kind"] == "inference"
  assert [row["batch"] for row in results["rows"]] == [1, 2]
  for row in results["rows"]:
    jax_result = row["runners"]["fcn_jax"]
    assert len(jax_result["seconds_per_step_samples"]) == 2
    assert jax_result["images_per_second"] == pytest.approx(
        row["batch"] / jax_result["seconds_per_step_median"])
    assert 0 < jax_result["mfu"]
    assert row["xla_flops_per_image"] <= row["analytic_flops_per_image"]
  assert results["environment"]["jax"] == jax.__version__


def _result_file(path, kind, rows):
  env = {"device": "CPU: test", "jax": jax.__version__, "torch": "none",
         "date": "2026-01-02T03:04:05+00:00"}
  path.write_text(json.dumps({"kind": kind, "environment": env,
                              "rows": rows}))
  return str(path)


def _row(batch, jax_ips, torch_ips=None, upsample="dense"):
  runners = {"fcn_jax": {"images_per_second": jax_ips}}
  if torch_ips is not None:
    runners["torch_eager"] = {"images_per_second": torch_ips}
  return {"model": "fcn8s", "size": 64, "dtype": "float32",
          "upsample": upsample, "batch": batch, "runners": runners}


def test_plot_series_average_repeated_rows_and_label_by_runner():
  rows = [_row(1, 2.0, 1.0), _row(1, 4.0, 1.0), _row(2, 5.0),
          _row(1, 3.0, upsample="depthwise")]
  lines = plot.series({"rows": rows})
  assert lines == {
      ("fcn8s 64px float32 dense", "fcn_jax"): [(1, 3.0), (2, 5.0)],
      ("fcn8s 64px float32 depthwise", "fcn_jax"): [(1, 3.0)],
      ("fcn8s 64px", "torch_eager"): [(1, 1.0)]}


def test_plot_draws_one_panel_per_kind_in_runner_colours(tmp_path, capsys):
  inference = [_row(1, 2.0, 1.0), _row(2, 3.0, 1.5), _row(4, 3.5, 1.8)]
  files = [_result_file(tmp_path / "a.json", "inference", inference[:2]),
           _result_file(tmp_path / "b.json", "inference", inference[2:]),
           _result_file(tmp_path / "c.json", "train", [_row(1, 0.5)])]
  plot.main(files[:2] + ["--output", str(tmp_path / "one.png")])
  plot.main(files + ["--output", str(tmp_path / "two.png")])
  assert "two.png" in capsys.readouterr().out
  with Image.open(tmp_path / "one.png") as one, \
       Image.open(tmp_path / "two.png") as two:
    assert one.format == two.format == "PNG"
    # The two inference files merge into one panel; train adds a second.
    assert 1.7 < two.width / one.width < 2.3
    pixels = {tuple(c) for c in np.asarray(one.convert("RGB")).reshape(-1, 3)}
  rgb = lambda name: tuple(round(255 * v) for v in colors.to_rgb(name))
  assert rgb(plot.RUNNER_COLORS["fcn_jax"]) in pixels
  assert rgb(plot.RUNNER_COLORS["torch_eager"]) in pixels
  assert rgb(plot.RUNNER_COLORS["torch_best"]) not in pixels  # Not measured.


def test_a_row_run_beside_a_busy_process_is_noisy_and_left_out(capsys):
  """A busy-looping child process is the other load a quiet-machine rule must
  catch: on N cores it uses about 1/N of the CPU time, far above 10%."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  busy = subprocess.Popen([sys.executable, "-c",
                           "import time\nt = time.time() + 3\n"
                           "while time.time() < t: pass"])
  try:
    time.sleep(0.3)  # Let it start.
    watch = common.MachineWatch()
    time.sleep(1.5)  # The "row": this process is idle, the child is not.
    record = watch.finish()
  finally:
    busy.kill()
    busy.wait()
  assert record["other_processes_cpu_share"] > common.NOISY_OTHERS_SHARE
  assert "other processes used" in record["noisy"]

  quiet = {"seconds_per_step_median": 1.0, "seconds_per_step_samples": [1.0],
           "images_per_second": 1.0}
  row = {"model": "fcn8s", "size": 32, "dtype": "float32", "upsample": "dense",
         "batch": 1, "analytic_flops_per_image": 1e9, "runners": {
             "fcn_jax": quiet}}
  results = {"kind": "train", "peak": {}, "environment": {
      "device": "cpu", "jax": "x", "flax": "x", "torch": None,
      "date": "2026-12-04T00:00", "load_average_1_5_15": [0, 0, 0],
      "platform": "cpu"}, "rows": [
          row | {"batch": 1, "machine": {"noisy": None}},
          row | {"batch": 2, "machine": record}]}
  common.print_table(results)
  out = capsys.readouterr().out
  table_lines = [l for l in out.splitlines() if l.startswith("| fcn8s")]
  assert [l.split(" | ")[4] for l in table_lines] == ["1"]
  assert "Left out, measured on a busy machine (1 rows)" in out


def test_ratios_show_their_spread_when_the_rounds_overlap():
  def runner(samples):
    return {"seconds_per_step_samples": samples,
            "seconds_per_step_median": float(np.median(samples))}
  fast = runner([1.0, 1.1, 1.2])
  slow = runner([2.0, 2.1, 2.2])
  overlapping = runner([1.1, 1.15, 1.3])
  assert common.format_ratio(fast, slow) == "1.91"  # 2.1 / 1.1: certain.
  median, low, high = common.ratio_spread(fast, overlapping)
  assert (low, high) == pytest.approx((1.1 / 1.2, 1.3 / 1.0))
  assert common.format_ratio(fast, overlapping) == (
      f"{1.15 / 1.1:.2f} [{1.1 / 1.2:.2f}-{1.3:.2f}]")
