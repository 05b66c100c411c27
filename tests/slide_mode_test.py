"""Sliding-window prediction: predict --mode slide and Predictor(mode="slide").

The windowing itself (coverage, averaging, bounded memory) is tested in
tests/sliding_window_test.py; here: the flags, agreement with whole-image
inference, test-time augmentation per window, multi-head nets, the memory
check and the files the command writes.
"""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fcn_jax.inference import inputs as inputs_lib
from fcn_jax.inference import driver as driver_lib
from fcn_jax.inference import command_line
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax import predict
from fcn_jax.inference import sliding_window
from fcn_jax.inference import tta
from fcn_jax import voc
from fcn_jax.data.preprocessing import CAFFE_VGG
from tests.tiny_fcn import (random_image, run_module, save_tiny_checkpoint,
                            tiny_fcn)

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Pointwise(nn.Module):
  """A 1x1 convolution (two heads with ``heads``): every pixel's logits
  depend on that pixel alone, so any tiling gives the whole-image logits."""
  heads: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    del train
    if self.heads:
      return {"sem": nn.Conv(5, (1, 1), name="sem")(x),
              "geo": nn.Conv(3, (1, 1), name="geo")(x)}
    return nn.Conv(5, (1, 1))(x)


@pytest.fixture(scope="module")
def fcn8s():
  return tiny_fcn("fcn8s", width_divisor=32)


def _args(*flags):
  args = predict.parse_args(["--checkpoint", "c", "--input", "i", "--output",
                             "o", *flags])
  command_line.check_predictor_flags(args)
  return args


def test_slide_flags_parse_and_bad_values_are_one_line_errors(tmp_path,
                                                              capsys):
  args = _args("--mode", "slide", "--window", "512", "--stride", "384")
  assert (args.mode, args.window, args.stride) == ("slide", 512, 384)
  args = _args("--mode", "slide")  # Defaults: 512, a quarter overlap.
  assert (args.window, args.stride) == (512, 384)
  assert _args("--mode", "slide", "--window", "256").stride == 192
  assert _args().mode == "fast"  # Whole-image inference stays the default.
  Image.fromarray(random_image(np.random.default_rng(0), 8, 8)).save(
      tmp_path / "x.png")
  for flags, message in [
      (["--mode", "slide", "--window", "512", "--stride", "600"],
       "error: --window 512 --stride 600: the stride 600 is larger than the "
       "window 512"),
      (["--mode", "slide", "--window", "0"],
       "error: --window 0: the window must be >= 1"),
      (["--window", "256"], "error: --window apply to --mode slide only"),
  ]:
    code = predict.main(["--checkpoint", str(tmp_path / "no_checkpoint"),
                         "--input", str(tmp_path / "x.png"), "--output",
                         str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_one_window_covering_the_image_is_whole_image_inference(fcn8s):
  model, variables = fcn8s
  image = random_image(np.random.default_rng(1), 64, 64)
  whole = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact")
  slide = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=64, batch_size=2)
  want = whole.predict_logits([image])[0]
  # Float32 rounding of logits of O(100): the window pass runs a batch of 2
  # (one padded), exact mode a batch of 1, and XLA:CPU may pick other
  # convolution algorithms for the two.
  np.testing.assert_allclose(slide.predict_logits([image])[0], want, rtol=0,
                             atol=1e-6 * np.abs(want).max())
  np.testing.assert_array_equal(slide.predict([image])[0],
                                whole.predict([image])[0])


@pytest.mark.parametrize("heads", [False, True])
def test_many_windows_give_whole_image_logits_for_a_pointwise_net(heads):
  model = Pointwise(heads)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  image = random_image(np.random.default_rng(2), 70, 95)
  whole = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact")
  slide = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=32, stride=20, batch_size=3)
  want, got = whole.predict_logits([image])[0], slide.predict_logits(
      [image])[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5,
                                                       atol=1e-5), want, got)
  assert (set(got) == {"sem", "geo"}) if heads else got.shape == (70, 95, 5)
  jax.tree.map(np.testing.assert_array_equal, slide.predict([image])[0],
               whole.predict([image])[0])
  assert slide.num_compiles == 1  # 4 x 6 windows, one shape.


def test_tiled_fcn_agrees_with_whole_image_within_the_stated_tolerance(
    fcn8s):
  # A window sees less context than the whole image (FCN's receptive field
  # is 404 px) and its own 100-px mean-colour pad at its borders, so labels
  # near window borders can change. Stated tolerance: >= 85% of the labels
  # agree for this random tiny net with 64-px windows on 96x128 (measured
  # 94.1%; a trained net, larger windows: far more).
  model, variables = fcn8s
  image = random_image(np.random.default_rng(1), 96, 128)
  whole = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="exact")
  slide = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=64, stride=32, batch_size=4)
  assert np.mean(slide.predict([image])[0] == whole.predict([image])[0]) \
      >= 0.85


def test_tta_in_slide_mode_is_tta_per_window_then_averaged(fcn8s):
  model, variables = fcn8s
  image = random_image(np.random.default_rng(3), 80, 100)
  augment = tta.TestTimeAugmentation(flip=True, scales=(0.75, 1.0))
  slide = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=48, stride=32, batch_size=3, flip=True,
                              scales=(0.75, 1.0))
  got = slide.predict_logits([image])[0]
  # Naive reference: each window alone (batch 1), augmented, summed into a
  # full-size canvas, divided by the number of windows over each pixel.
  forward = jax.jit(lambda x: augment(
      lambda y: model.apply(variables, y, train=False), x))
  total = np.zeros((80, 100, 21))
  count = np.zeros((80, 100, 1))
  for top in sliding_window.tile_starts(80, 48, 32):
    for left in sliding_window.tile_starts(100, 48, 32):
      window = CAFFE_VGG(image[top:top + 48, left:left + 48])
      total[top:top + 48, left:left + 48] += np.asarray(
          forward(window[None]))[0]
      count[top:top + 48, left:left + 48] += 1
  # Float32 rounding of logits of O(500) (other batch sizes, other summation
  # orders, other XLA versions): to 1e-5 of their scale.
  want = total / count
  np.testing.assert_allclose(got, want, rtol=0,
                             atol=1e-5 * np.abs(want).max())
  # And TTA does something here: plain slide mode differs.
  plain = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=48, stride=32, batch_size=3)
  assert np.abs(plain.predict_logits([image])[0] - got).max() > 1e-2


def test_an_image_too_large_for_whole_inference_is_told_to_slide(
    tmp_path, fcn8s):
  model, variables = fcn8s
  fast = predictor_lib.Predictor(model, variables, CAFFE_VGG, batch_size=1)
  slide = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                              window=64, batch_size=1)
  whole_need = fast.memory_bytes(300, 260)
  slide_need = slide.memory_bytes(300, 260)
  assert slide_need < whole_need
  inputs = tmp_path / "in"
  inputs.mkdir()
  Image.fromarray(random_image(np.random.default_rng(4), 300, 260)).save(
      inputs / "big.png")
  limit = (slide_need + whole_need) // 2
  summary = driver_lib.run(fast, inputs_lib.find_inputs([str(inputs)]),
                           tmp_path / "fast", voc.VOC_CLASSES, progress=False,
                           memory_limit=limit)
  [(_, message)] = summary.failures
  assert "run it in tiles with --mode slide (e.g. --window 512 --stride " \
      "384)" in message
  summary = driver_lib.run(slide, inputs_lib.find_inputs([str(inputs)]),
                           tmp_path / "slide", voc.VOC_CLASSES, progress=False,
                           memory_limit=limit, write_overlay=False)
  assert not summary.failures and summary.num_images == 1
  assert summary.run_shapes == {(64, 64)}
  with Image.open(tmp_path / "slide" / "big.png") as png:
    np.testing.assert_array_equal(
        np.asarray(png), slide.predict([inputs_lib.load_image(
            inputs / "big.png")])[0])
  # Too little even for one batch of windows: says what to shrink.
  message = driver_lib.too_large(slide, 300, 260, slide_need // 2)
  assert message.startswith("windows of 64x64 (batch 1) over this 300x260 "
                            "image need about")
  assert "give a smaller --window than 64" in message


def test_predict_command_in_slide_mode_writes_the_whole_mode_files(tmp_path):
  model, variables = save_tiny_checkpoint(tmp_path / "run")
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(5)
  sizes = {"a.jpg": (70, 90), "b.png": (40, 30)}  # b: padded to the window.
  for name, (h, w) in sizes.items():
    Image.fromarray(random_image(rng, h, w)).save(inputs / name)
  result = run_module(
      ["fcn_jax.predict", "--checkpoint", str(tmp_path / "run"), "--input",
       str(inputs), "--output", str(tmp_path / "out"), "--no-progress",
       "--mode", "slide", "--window", "48", "--stride", "32", "--batch-size",
       "3", "--save-logits"], tmp_path, ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Segmented 2 image(s)" in result.stdout
  assert "1 compile(s) for 1 run shape(s)" in result.stdout
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="slide",
                                  window=48, stride=32, batch_size=3)
  for name, (h, w) in sizes.items():
    stem = pathlib.Path(name).stem
    out = tmp_path / "out"
    with Image.open(out / f"{stem}.png") as png:
      assert png.mode == "P" and png.size == (w, h)
      labels = np.asarray(png)
    image = inputs_lib.load_image(inputs / name)
    np.testing.assert_array_equal(labels, predictor.predict([image])[0])
    logits = np.load(out / f"{stem}.npz")["logits"]
    assert logits.dtype == np.float16 and logits.shape == (h, w, 21)
    np.testing.assert_array_equal(
        logits.argmax(-1), predictor.predict_logits([image])[0].astype(
            np.float16).argmax(-1))
    with Image.open(out / f"{stem}_overlay.jpg") as overlay:
      assert overlay.height >= h and overlay.width > w
