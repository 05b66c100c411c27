"""Tests of the prediction command (fcn_jax.predict)."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from fcn_jax.inference import inputs as inputs_lib
from fcn_jax.inference import driver as driver_lib
from fcn_jax.inference import outputs as outputs_lib
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax import predict
from fcn_jax import voc
from fcn_jax.data.preprocessing import CAFFE_VGG
from tests.tiny_fcn import (random_image, run_module, save_tiny_checkpoint,
                            tiny_fcn)
from tests.helpers import jit_apply

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _decoded(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def _write_folder(folder: pathlib.Path, rng) -> dict[str, np.ndarray]:
  """Mixed-size JPEG/PNG images, a grey PNG, a rotated JPEG, a corrupt file.

  Returns the upright RGB pixels of each image as a decoder gives them.
  """
  folder.mkdir()
  images = {}
  for name, (h, w) in {"a.jpg": (37, 50), "b.png": (40, 60),
                       "c.png": (64, 64), "d.jpg": (33, 70)}.items():
    Image.fromarray(random_image(rng, h, w)).save(folder / name)
    images[name] = _decoded(folder / name)
  grey = random_image(rng, 30, 20)[..., 0]
  Image.fromarray(grey).save(folder / "grey.png")
  images["grey.png"] = np.repeat(grey[..., None], 3, -1)
  # A 20x30 (HxW) JPEG whose EXIF says "rotate 90 degrees": upright 30x20.
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(random_image(rng, 20, 30)).save(folder / "rotated.jpg",
                                                   exif=exif)
  # Orientation 6: the stored pixels are shown turned 90 degrees clockwise.
  images["rotated.jpg"] = np.rot90(_decoded(folder / "rotated.jpg"), k=-1)
  (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
  (folder / "notes.txt").write_text("not an image, not picked from a folder")
  return images


def test_run_writes_palette_pngs_overlays_and_logits(tmp_path):
  model, variables = tiny_fcn("fcn32s")
  images = _write_folder(tmp_path / "in", np.random.default_rng(0))
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, mode="fast",
                                  buckets=32, batch_size=2)
  paths = inputs_lib.find_inputs([str(tmp_path / "in")])
  assert [p.name for p in paths] == ["a.jpg", "b.png", "c.png", "corrupt.jpg",
                                     "d.jpg", "grey.png", "rotated.jpg"]
  out = tmp_path / "out"
  summary = driver_lib.run(predictor, paths, out, voc.VOC_CLASSES,
                           save_logits=True, progress=False)
  assert summary.num_images == 6
  assert [pathlib.Path(p).name for p, _ in summary.failures] == ["corrupt.jpg"]
  assert "corrupt.jpg" in summary.report()
  # Buckets: 64x64 (a, b, c), 64x96 (d), 32x32 (grey, rotated).
  assert summary.run_shapes == {(64, 64), (64, 96), (32, 32)}
  assert summary.num_compiles == 3
  for name, image in images.items():
    stem = pathlib.Path(name).stem
    with Image.open(out / f"{stem}.png") as png:
      assert png.mode == "P"
      labels = np.asarray(png)
    assert labels.shape == image.shape[:2]
    # The same as predicting the upright decoded image directly.
    want = predictor.predict([image])[0]
    np.testing.assert_array_equal(labels, want)
    logits = np.load(out / f"{stem}.npz")["logits"]
    assert logits.dtype == np.float16
    assert logits.shape == image.shape[:2] + (21,)
    with Image.open(out / f"{stem}_overlay.jpg") as overlay:
      assert overlay.height >= image.shape[0]
      assert overlay.width > image.shape[1]  # Image plus legend.
  with Image.open(out / "rotated.png") as png:
    assert png.size == (20, 30)  # Upright: 30 high, 20 wide.
  assert not (out / "corrupt.png").exists()


def test_find_inputs_takes_globs_and_reports_no_match(tmp_path):
  for name in ["x.jpg", "y.png", "z.txt"]:
    (tmp_path / name).write_bytes(b"")
  found = inputs_lib.find_inputs([str(tmp_path / "*.jpg"),
                                  str(tmp_path / "y.png")])
  assert [p.name for p in found] == ["x.jpg", "y.png"]
  with pytest.raises(inputs_lib.InputError, match="matches no file"):
    inputs_lib.find_inputs([str(tmp_path / "*.webp")])
  with pytest.raises(inputs_lib.InputError, match="no images"):
    (tmp_path / "empty").mkdir()
    inputs_lib.find_inputs([str(tmp_path / "empty")])


def test_output_names_disambiguate_clashing_stems():
  paths = [pathlib.Path("a/x.jpg"), pathlib.Path("a/x.png"),
           pathlib.Path("b/y.jpg")]
  assert outputs_lib.output_names(paths) == ["x_jpg", "x_png", "y"]


def test_predict_command_end_to_end(tmp_path):
  model, variables = save_tiny_checkpoint(tmp_path / "run")
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(0)
  sizes = {"a.jpg": (37, 50), "b.png": (40, 60), "c.jpg": (70, 33)}
  for name, (h, w) in sizes.items():
    Image.fromarray(random_image(rng, h, w)).save(inputs / name)
  (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  result = run_module(
      ["fcn_jax.predict", "--checkpoint", str(tmp_path / "run"), "--input",
       str(inputs), "--output", str(tmp_path / "out"), "--no-progress",
       "--batch-size", "2"], tmp_path, ROOT)
  assert result.returncode == 1, result.stderr[-3000:]  # One input failed.
  assert "FAILED" in result.stdout and "broken.png" in result.stdout
  assert "Segmented 3 image(s)" in result.stdout
  # Buckets 64x64 (a, b) and 96x64 (c): one compile each.
  assert "2 compile(s) for 2 run shape(s)" in result.stdout
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG)
  for name, (h, w) in sizes.items():
    stem = pathlib.Path(name).stem
    with Image.open(tmp_path / "out" / f"{stem}.png") as png:
      assert png.mode == "P" and png.size == (w, h)
      labels = np.asarray(png)
    np.testing.assert_array_equal(
        labels, predictor.predict([_decoded(inputs / name)])[0])
    assert (tmp_path / "out" / f"{stem}_overlay.jpg").is_file()


def _png16(path: pathlib.Path, values: np.ndarray) -> None:
  """Writes a 16-bit PNG (grey [H, W] or RGB [H, W, 3]) from its spec."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  height, width = values.shape[:2]
  rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))

  header = struct.pack(">IIBBBBB", width, height, 16,
                       0 if values.ndim == 2 else 2, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                   + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_images_are_scaled_to_8_bits(tmp_path):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
  colour = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
  _png16(tmp_path / "grey.png", grey)
  _png16(tmp_path / "colour.png", colour)
  # Not clipped at 255: the high byte, as PIL reads 16-bit colour PNGs.
  np.testing.assert_array_equal(inputs_lib.load_image(tmp_path / "grey.png"),
                                np.repeat((grey >> 8)[..., None], 3, -1))
  np.testing.assert_array_equal(inputs_lib.load_image(tmp_path / "colour.png"),
                                colour >> 8)
  # A 16-bit PGM (PIL mode I).
  (tmp_path / "grey.pgm").write_bytes(b"P5\n7 6\n65535\n"
                                      + grey.astype(">u2").tobytes())
  np.testing.assert_array_equal(inputs_lib.load_image(tmp_path / "grey.pgm"),
                                np.repeat((grey >> 8)[..., None], 3, -1))
  Image.fromarray(grey.astype(np.float32)).save(tmp_path / "float.tif")
  with pytest.raises(inputs_lib.InputError,
                     match=r"float\.tif: a floating-point image .*convert it "
                     r"to 8-bit"):
    inputs_lib.load_image(tmp_path / "float.tif")


def test_an_image_too_large_for_the_memory_is_refused_before_running(
    tmp_path):
  model, variables = tiny_fcn("fcn32s")
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG, batch_size=2)
  small, large = predictor.memory_bytes(32, 32), predictor.memory_bytes(
      256, 192)
  # At least the logits it returns; growing with the size (the net pads
  # every image by 100 px, so not in proportion).
  assert small >= 2 * 32 * 32 * 21 * 4
  assert large >= 2 * 256 * 192 * 21 * 4 and large > small
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(1)
  Image.fromarray(random_image(rng, 30, 20)).save(inputs / "small.png")
  Image.fromarray(random_image(rng, 250, 190)).save(inputs / "large.png")
  summary = driver_lib.run(predictor, inputs_lib.find_inputs([str(inputs)]),
                           tmp_path / "out", voc.VOC_CLASSES, progress=False,
                           memory_limit=(small + large) // 2)
  assert summary.num_images == 1 and (tmp_path / "out" / "small.png").exists()
  assert not (tmp_path / "out" / "large.png").exists()
  [(path, message)] = summary.failures
  assert path.endswith("large.png")
  assert "a forward pass at 256x192 (batch 2) needs about" in message
  assert "--max_memory" in message and "downscale it" in message
  assert summary.run_shapes == {(32, 32)}  # The large one never ran.


@pytest.mark.parametrize("make_output, message", [
    (lambda tmp: tmp / "file.txt", "is a file"),
    (lambda tmp: tmp / "file.txt" / "out", "is under a file"),
])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys,
                                                      make_output, message):
  (tmp_path / "file.txt").write_text("not a folder")
  Image.fromarray(random_image(np.random.default_rng(2), 8, 8)).save(
      tmp_path / "x.png")
  code = predict.main(["--checkpoint", str(tmp_path / "no_checkpoint"),
                       "--input", str(tmp_path / "x.png"), "--output",
                       str(make_output(tmp_path))])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: --output") and message in err
  assert err.count("\n") == 1 and "Traceback" not in err


# --------------------------------------------------------------------------
# Exact mode at buckets chosen from the inputs; one-line flag mistakes; no
# output folder before the checkpoint loads; cache loads; plain progress.
# --------------------------------------------------------------------------


def _native_logits(model, variables, image):
  """The reference deploy net's logits: model.apply at the native size."""
  return np.asarray(jit_apply(model, variables, CAFFE_VGG(image)[None],
                                train=False))[0]


def test_exact_mode_picks_a_few_buckets_from_the_input_sizes(tmp_path,
                                                             capsys):
  # 9 sizes that a multiple of 32 would run at 9 shapes (9 compiles).
  model, variables = save_tiny_checkpoint(tmp_path / "run", width_divisor=32)
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(7)
  images = {}
  for h in (20, 40, 70):
    for w in (22, 45, 75):
      images[f"{h}x{w}.png"] = random_image(rng, h, w)
      Image.fromarray(images[f"{h}x{w}.png"]).save(inputs / f"{h}x{w}.png")
  code = predict.main(["--checkpoint", str(tmp_path / "run"), "--input",
                       str(inputs), "--output", str(tmp_path / "out"),
                       "--mode", "exact", "--no_progress", "--save_logits",
                       "--no_overlay", "--max_buckets", "2"])
  out = capsys.readouterr().out
  assert code == 0, out
  compiles = int(out.split(" compile(s)")[0].rsplit(" ", 1)[1])
  assert compiles <= 2  # Not 9.
  [line] = [l for l in out.splitlines() if l.startswith("Buckets chosen")]
  chosen = line.split(": ", 1)[1].split(";")[0].split(", ")
  assert 1 <= len(chosen) <= 2  # --max_buckets.
  assert f"{len(chosen)} compile(s) for {len(chosen)} run shape(s)" in out
  for name in ("20x22.png", "70x45.png"):  # Native: a compile
    image = images[name]                                # per size.
    logits = np.load(tmp_path / "out" / f"{pathlib.Path(name).stem}.npz")[
        "logits"].astype(np.float32)
    want = _native_logits(model, variables, image)
    np.testing.assert_allclose(logits, want, rtol=2e-3,
                               atol=2e-3 * np.abs(want).max())


def test_exact_mode_buckets_hold_every_image_without_an_unused_one(tmp_path):
  model, variables = tiny_fcn("fcn32s")
  predictor = predictor_lib.Predictor(model, variables, CAFFE_VGG,
                                      mode="exact", max_buckets=2)
  # Portraits and landscapes: two buckets, neither max height x max width.
  sizes = [(40, 30)] * 3 + [(30, 40)] * 2
  assert predictor.plan(sizes) == ((30, 40), (40, 30))
  assert {predictor.run_shape(*s) for s in sizes} == {(30, 40), (40, 30)}
  fast = predictor_lib.Predictor(model, variables, CAFFE_VGG)
  assert fast.plan(sizes) is None  # Fast mode: each image alone, to 32s.
  assert fast.run_shape(40, 30) == (64, 32)


@pytest.mark.parametrize("flag, message", [
    ("--buckets=0x5", "error: --buckets: '0x5' is not a size; give HxW with "
     "positive whole numbers, such as 384x512"),
    ("--buckets=48x-48", "error: --buckets: '48x-48' is not a size"),
    ("--buckets=abc", "error: --buckets: 'abc' is neither 'auto', a multiple "
     "such as 32, nor sizes such as 384x512,512x384"),
    ("--buckets=0", "error: --buckets: '0' is neither 'auto', a multiple"),
    ("--step=bestt", "error: --step 'bestt': give best (the checkpoint with "
     "the best mean IU; the latest if none was evaluated), latest, or a step "
     "number such as 4000"),
    ("--scales=1,x", "error: --scales must be comma-separated numbers"),
    ("--no_such_flag", "error: unknown flag --no_such_flag (usage: python -m "
     "fcn_jax.predict [flags]; --help lists the flags)"),
    ("--batch_size=0", "error: flag --batch_size=0: 0 is not a positive "
     "integer"),
])
def test_a_bad_flag_value_is_one_line(flag, message, capsys):
  with pytest.raises(SystemExit) as exited:
    predict.main(["--checkpoint", "c", "--input", "i", "--output", "o", flag])
  err = capsys.readouterr().err
  assert exited.value.code == 2
  assert err.startswith(message) and err.count("\n") == 1, err


def test_a_wrong_checkpoint_leaves_no_output_folder(tmp_path, capsys):
  Image.fromarray(random_image(np.random.default_rng(2), 8, 8)).save(
      tmp_path / "x.png")
  code = predict.main(["--checkpoint", str(tmp_path / "no_such_run"),
                       "--input", str(tmp_path / "x.png"), "--output",
                       str(tmp_path / "new" / "out")])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
  assert "no_such_run" in err
  assert not (tmp_path / "new").exists()


def test_cache_loads_are_not_reported_as_compiles(tmp_path, monkeypatch):
  save_tiny_checkpoint(tmp_path / "run")
  Image.fromarray(random_image(np.random.default_rng(3), 30, 40)).save(
      tmp_path / "x.png")
  monkeypatch.setenv("FCN_JAX_COMPILATION_CACHE_DIR", str(tmp_path / "cache"))
  reports = []
  for out in ("out1", "out2"):
    result = run_module(
        ["fcn_jax.predict", "--checkpoint", str(tmp_path / "run"), "--input",
         str(tmp_path / "x.png"), "--output", str(tmp_path / out),
         "--no_progress", "--batch_size", "1"], tmp_path, ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    reports.append(result.stdout)
  assert "1 compile(s) for 1 run shape(s)" in reports[0]
  assert ("0 compile(s) and 1 load(s) from the compilation cache for 1 run "
          "shape(s)") in reports[1]


def test_progress_without_a_terminal_is_plain_lines(capsys):
  from fcn_jax import logging_utils  # pylint: disable=g-import-not-at-top
  bar = logging_utils.progress_bar(20, "images", "segmenting")
  for _ in range(20):
    bar.update(1)
  bar.close()
  err = capsys.readouterr().err
  assert "\r" not in err and "\x1b" not in err
  lines = err.splitlines()
  assert len(lines) == 10 and lines[-1].startswith("segmenting: 20/20 images")
