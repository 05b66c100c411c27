"""The user journeys' rough edges: errors that name the right fix before
anything is written, one command-line style (underscores, old spellings as
hidden aliases, --help exits 0, exit status 2 for bad input), one overwrite
rule, the time estimate, and library noise kept off the console.

The end-to-end journey (train, then evaluate = training's numbers, the
closing summary, a finished run rerun) is in tests/main_test.py.
"""

import logging as std_logging
import pathlib
from unittest import mock

from absl import logging
import numpy as np
from PIL import Image
import pytest

from configs import folder_quickstart
from fcn_jax import checkpointing
from fcn_jax import cli
from fcn_jax import export
from fcn_jax import logging_utils
from fcn_jax import models
from fcn_jax import plot_metrics
from fcn_jax import predict
from fcn_jax import prepare_data
from fcn_jax import run_config
from fcn_jax.data import preprocessing
from fcn_jax.training import loop
from tests import tiny_fcn

REPO = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# Item 2: the dataset and the initial weights are checked first.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name, error, message", [
    ("", ValueError, "config.dataset.name is empty: give the dataset, e.g. "
     "--config.dataset.name=my_cats"),
    ("my_dogs", FileNotFoundError, "prepare_data --dataset folder"),
])
def test_a_missing_dataset_is_named_before_anything_is_written(
    tmp_path, name, error, message):
  # configs/folder_quickstart.py takes the class count from the dataset: the
  # error used to be "... records none: set config.model.num_classes".
  config = folder_quickstart.get_config()
  config.dataset.name = name
  config.dataset.data_dir = str(tmp_path / "tfds")
  workdir = tmp_path / "run"
  with pytest.raises(error, match=message) as raised:
    loop.run(config, str(workdir))
  assert "num_classes" not in str(raised.value)
  assert not workdir.exists()  # No empty checkpoints/ left behind.


def test_weights_of_another_width_name_the_flag_before_anything_is_written(
    tmp_path):
  model, variables = tiny_fcn.tiny_fcn("fcn8s", width_divisor=32)
  weights = tmp_path / "vgg_tiny"
  checkpointing.save_weights(str(weights), variables["params"],
                             checkpointing.make_metadata(
                                 models.ModelSpec("fcn8s", 21,
                                                  width_divisor=32),
                                 preprocessing.CAFFE_VGG))
  del model
  config = folder_quickstart.get_config()
  config.dataset.name = "synthetic_shapes/tiny"
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.model.num_classes = 21
  config.init_from = str(weights)
  config.model.width_divisor = 64
  workdir = tmp_path / "run"
  with pytest.raises(ValueError,
                     match="width_divisor=32, but config.model.width_divisor="
                     "64: pass --config.model.width_divisor=32"):
    loop.run(config, str(workdir))
  assert not workdir.exists()


def test_from_scratch_on_caffe_inputs_warns_and_the_quickstart_does_not():
  config = folder_quickstart.get_config()
  with mock.patch.object(run_config.logging, "warning") as warning:
    run_config.warn_if_scratch_with_caffe_inputs(
        config, preprocessing.PRESETS[config.preprocessing])
    warning.assert_not_called()
    run_config.warn_if_scratch_with_caffe_inputs(config,
                                                 preprocessing.CAFFE_VGG)
    assert "--config.preprocessing=torchvision" in warning.call_args[0][0]
    warning.reset_mock()
    config.init_from = "weights/vgg16_caffe"  # Pretrained: Caffe's inputs.
    run_config.warn_if_scratch_with_caffe_inputs(config,
                                                 preprocessing.CAFFE_VGG)
    warning.assert_not_called()


# --------------------------------------------------------------------------
# Item 1: the time left, from measured steps.
# --------------------------------------------------------------------------


def test_progress_estimates_the_time_left_after_the_measured_steps():
  clock = iter([0.0, 100.0, 106.0])  # __init__, restart, estimate.
  with mock.patch.object(logging_utils.time, "perf_counter",
                         lambda: next(clock)):
    progress = logging_utils.Progress(total_steps=303, images_per_step=8)
    progress.restart(1)  # After the compiled first step.
    assert progress.estimate(3, measured_steps=3) is None  # 2 steps only.
    line = progress.estimate(4, measured_steps=3)
  # 3 steps in 6 s: 2 s/step, 299 steps left: 598 s.
  assert line.startswith("measured 2 s/step over 3 steps: about 10 min left "
                         "for the 299 remaining steps")
  assert progress.estimate(5) is None  # Once.


# --------------------------------------------------------------------------
# Item 5: one command-line style.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [predict, export, prepare_data,
                                     plot_metrics])
def test_help_of_the_argparse_commands_exits_0_in_one_spelling(command,
                                                               capsys):
  with pytest.raises(SystemExit) as exited:
    command.main(["--help"])
  assert exited.value.code == 0
  text = capsys.readouterr().out
  flags = [word.split("=")[0].strip("[],")
           for word in text.split() if word.startswith(("--", "[--"))]
  assert flags and not [f for f in flags if "-" in f.lstrip("[-")], flags


def test_old_spellings_are_hidden_aliases_and_mistakes_exit_2(capsys):
  args = predict.parse_args(
      ["--checkpoint", "c", "--input", "i", "--output", "o",
       "--batch-size", "2", "--no-progress", "--save-logits",
       "--shift-stitch=2", "--max-memory", "1.5"])
  assert (args.batch_size, args.no_progress, args.save_logits,
          args.shift_stitch, args.max_memory) == (2, True, True, 2, 1.5)
  assert cli.normalise_argv(["--batch", "2", "--config.a-b=1", "pos-x"],
                            lambda name: False, {"--batch": "--batch_size"}
                            ) == ["--batch_size", "2", "--config.a-b=1",
                                  "pos-x"]
  with pytest.raises(SystemExit) as exited:
    predict.parse_args(["--checkpoint", "c", "--input", "i", "--output", "o",
                        "--no-such-flag"])
  assert exited.value.code == 2
  assert "--no-such-flag" in capsys.readouterr().err


def test_bad_input_exits_2_in_one_line(tmp_path, capsys):
  assert plot_metrics.main([str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1


def test_predict_keeps_existing_outputs_unless_overwrite(tmp_path, capsys):
  tiny_fcn.save_tiny_checkpoint(tmp_path / "run", width_divisor=64)
  Image.fromarray(tiny_fcn.random_image(np.random.default_rng(0), 24, 32)
                  ).save(tmp_path / "photo.jpg")
  args = ["--checkpoint", str(tmp_path / "run"), "--input",
          str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out"),
          "--no_progress"]
  assert predict.main(args) == 0
  captured = capsys.readouterr()
  # The summary repeats where the outputs are; no Orbax read-only warning.
  assert f"Outputs in {tmp_path / 'out'}" in captured.out
  assert "read only" not in captured.err
  before = (tmp_path / "out" / "photo.png").read_bytes()
  (tmp_path / "out" / "photo.png").write_bytes(b"mine")
  assert predict.main(args) == 2
  err = capsys.readouterr().err
  assert err == (f"error: --output: {tmp_path / 'out' / 'photo.png'} (and 1 "
                 "more) exists; pass --overwrite to replace it, or choose "
                 "another output\n")
  assert (tmp_path / "out" / "photo.png").read_bytes() == b"mine"
  assert predict.main(args + ["--overwrite"]) == 0
  assert (tmp_path / "out" / "photo.png").read_bytes() == before


def test_predict_says_when_the_model_learnt_synthetic_data():
  config = '{"dataset": {"name": "synthetic_shapes/tiny"}}'
  assert predict.trained_dataset({"config": config}) == "synthetic_shapes/tiny"
  assert predict.trained_dataset({}) is None  # A weights export.


# --------------------------------------------------------------------------
# Item 6: library messages the user cannot act on stay off the console.
# --------------------------------------------------------------------------


def test_library_noise_is_hidden_unless_verbose(capsys):
  logging_utils.quiet_library_logs()
  records = []

  class Keep(std_logging.Handler):

    def emit(self, record):
      records.append(record.getMessage())

  handler = Keep()
  absl_logger = std_logging.getLogger("absl")
  absl_logger.addHandler(handler)
  verbosity = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.INFO)
    logging.warning("Given directory is read only=/x/checkpoints")
    logging.warning("Requested `tracked_metric`; did not provide metrics.")
    logging.warning("A warning the user can act on.")
    with logging_utils.quiet_stdout():
      print("Downloading and preparing dataset Unknown size ...")
    assert records == ["A warning the user can act on."]
    assert "Downloading" not in capsys.readouterr().out
    logging.set_verbosity(1)  # --verbosity=1 shows everything.
    logging.warning("Given directory is read only=/x/checkpoints")
    assert records[-1] == "Given directory is read only=/x/checkpoints"
  finally:
    logging.set_verbosity(verbosity)
    absl_logger.removeHandler(handler)


# --------------------------------------------------------------------------
# Item 7: a tiny validation split is flagged.
# --------------------------------------------------------------------------


def test_prepare_data_warns_about_a_tiny_val_split(tmp_path, capsys):
  root = tmp_path / "pets"
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  (root / "splits").mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    Image.fromarray(tiny_fcn.random_image(rng, 16, 16)).save(
        root / "images" / f"p{i}.jpg")
    Image.fromarray(rng.integers(0, 2, (16, 16)).astype(np.uint8)).save(
        root / "masks" / f"p{i}.png")
  (root / "splits" / "train.txt").write_text("p0\np1\np2\n")
  (root / "splits" / "val.txt").write_text("p3\n")
  assert prepare_data.main(["--dataset", "folder", "--manual_dir", str(root),
                            "--name", "tiny_pets", "--data_dir",
                            str(tmp_path / "tfds")]) == 0
  out = capsys.readouterr().out
  assert "warning: the val split has 1 image(s)" in out
  assert "configs/folder_quickstart.py" in out
  assert "Downloading and preparing" not in out
