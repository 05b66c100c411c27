"""run_config.resolve: every check before anything is written, every
derived value once, in a Run."""

import json
import math
from unittest import mock

import pytest

from fcn_jax import checkpointing
from fcn_jax import datasets
from fcn_jax import default_config
from fcn_jax import errors
from fcn_jax import models
from fcn_jax import run_config
from fcn_jax.data import data_sources
from fcn_jax.data import input_pipeline
from fcn_jax.training import loop


def _config(data_dir):
  """A tiny training config on synthetic_shapes/tiny (generated in
  ``data_dir`` on first use)."""
  config = default_config.get_config()
  config.dataset.name = "synthetic_shapes/tiny"
  config.dataset.data_dir = str(data_dir)
  config.dataset.train_split = "synthetic_train"
  config.dataset.eval_split = "synthetic_val"
  config.model.num_classes = 0  # The dataset's.
  config.model.width_divisor = 64
  config.num_train_steps = 2
  config.batch_size = 1
  config.input.crop_size = 32
  config.input.train_mode = "epochs"
  config.input.eval_pad_size = 0
  config.compilation_cache_dir = "/this/machine/only"
  return config


def test_resolve_derives_every_value_once_and_leaves_the_config_alone(
    tmp_path):
  config = _config(tmp_path)
  before = config.to_json()
  run = run_config.resolve(config, "train", process_count=1)
  assert config.to_json() == before  # Not modified (no num_classes = 21).
  assert run.spec == models.ModelSpec.from_dict(run.config.model.to_dict())
  assert run.spec.num_classes == 21 and len(run.class_names) == 21
  assert run.class_names[0] == "background"
  assert (run.train_bucketed, run.eval_bucketed) == (False, True)
  assert run.evaluates and run.tta.is_identity and not run.init_sources
  assert run.input.crop_size == 32 and run.layout.labels == (
      ("score", "segmentation_mask"),)
  recorded = json.loads(run.recorded)
  assert "compilation_cache_dir" not in recorded  # Machine-local.
  assert recorded["model"]["num_classes"] == 21
  assert recorded["optim"] == json.loads(config.optim.to_json())
  with pytest.raises(AttributeError):
    run.config.no_such_field = 1  # Locked.
  config.tta.flip = True  # TTA: evaluation leaves the buckets.
  assert not run_config.resolve(config, "train",
                                process_count=1).eval_bucketed


@pytest.mark.parametrize("field, value, message", [
    ("base_lr", math.nan, "config.optim.base_lr must be a finite number "
     ">= 0, got nan"),
    ("base_lr", math.inf, "config.optim.base_lr must be a finite number "
     ">= 0, got inf"),
    ("base_lr", -0.01, "config.optim.base_lr must be a finite number >= 0, "
     "got -0.01"),
    ("momentum", math.nan, "config.optim.momentum must be"),
])
def test_a_learning_rate_that_cannot_train_is_refused(tmp_path, field, value,
                                                      message):
  config = _config(tmp_path)
  config.optim[field] = value
  with pytest.raises(errors.UserError, match=message.replace(".", r"\.")):
    run_config.resolve(config, "train", process_count=1)


def test_native_size_evaluation_batches_are_checked_before_step_1(tmp_path):
  config = _config(tmp_path)
  config.input.buckets = "none"  # Also a run resumed from buckets=auto.
  config.eval_batch_size = 2
  workdir = tmp_path / "run"
  with pytest.raises(ValueError,
                     match="eval_pad_size=0 evaluates at native sizes, one "
                     "image per host: set config.eval_batch_size"):
    loop.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # Refused before anything was written.
  config.mode = "train"  # No evaluation: nothing to refuse.
  assert not run_config.resolve(config, "train", process_count=1).evaluates


def test_unknown_fields_and_exclusions_are_refused(tmp_path):
  config = _config(tmp_path)
  config.optim.unlock()
  config.optim.base_rl = 10.0
  with pytest.raises(errors.UserError,
                     match=r"unknown config field config\.optim\.base_rl "
                     r"\(did you mean 'base_lr'\?\)"):
    run_config.resolve(config, "train", process_count=1)
  config = _config(tmp_path)
  config.eval.exclude_classes = ("unicorn",)
  with pytest.raises(errors.UserError, match="no class 'unicorn'"):
    run_config.resolve(config, "train", process_count=1)


def test_a_loaded_model_replaces_the_config_model(tmp_path):
  config = _config(tmp_path)
  config.init_from = str(tmp_path / "not_here")  # Not read for eval.
  config.eval_batch_size = 1
  spec = models.ModelSpec(name="fcn16s", num_classes=21, width_divisor=64)
  loaded = checkpointing.LoadedModel(
      spec=spec, params={}, preprocessing=None, metadata={},
      path=str(tmp_path / "export"), step=None)
  run = run_config.resolve(config, "eval", loaded, process_count=1)
  assert run.spec == spec and run.config.model.name == "fcn16s"
  assert config.model.name == "fcn32s"  # Not modified.
  assert not run.init_sources and run.config.init_from == ""
  wrong = checkpointing.LoadedModel(
      spec=models.ModelSpec(name="fcn16s", num_classes=5, width_divisor=64),
      params={}, preprocessing=None, metadata={},
      path=str(tmp_path / "export"), step=None)
  with pytest.raises(errors.UserError,
                     match=r"the model in .*export has num_classes=5, but the "
                     "dataset synthetic_shapes/tiny has 21 classes"):
    run_config.resolve(config, "eval", wrong, process_count=1)


def test_resuming_with_other_buckets_says_what_changed(tmp_path):
  config = _config(tmp_path)
  config.input.buckets = "none"
  run = run_config.resolve(config, "train", process_count=1)
  saved = json.loads(run.recorded)
  saved["input"]["buckets"] = "auto"
  with mock.patch.object(loop.logging, "info") as info:
    loop._log_input_changes(run, {"config": json.dumps(saved)})
  message = info.call_args[0][0] % info.call_args[0][1:]
  assert message == (
      "Resuming with config.input.buckets='none' (the checkpoint's run had "
      "'auto'): the results stay exact, only the compiled shapes change.")
  with mock.patch.object(loop.logging, "info") as info:
    loop._log_input_changes(run, {"config": run.recorded})  # The same.
  info.assert_not_called()


def test_a_run_opens_the_dataset_once(tmp_path, monkeypatch):
  # The builder is opened once per command (by resolve), and each split
  # once: the image-size checks, the training iterator and every evaluation
  # read what resolve opened (before, each opened the dataset by name).
  builders, splits = [], []
  open_builder, open_split = datasets.builder, data_sources.open_split
  monkeypatch.setattr(datasets, "builder", lambda *args, **kwargs: (
      builders.append(args[0]), open_builder(*args, **kwargs))[1])
  monkeypatch.setattr(data_sources, "open_split", lambda *args, **kwargs: (
      splits.append(args[1]), open_split(*args, **kwargs))[1])
  config = _config(tmp_path)
  config.input.eval_pad_size = 64  # Checked against the eval split too.
  run = run_config.resolve(config, "train", process_count=1)
  assert builders == ["synthetic_shapes/tiny"]
  assert sorted(splits) == ["synthetic_train", "synthetic_val"]
  caffe = run_config.resolve_preprocessing(run.config, None)
  batch = next(input_pipeline.create_train_iterator(
      run, caffe, process_index=0, process_count=1))
  assert batch["image"].shape == (1, 32, 32, 3)
  for _ in range(2):  # Two evaluations.
    data = input_pipeline.create_eval_iterator(run, caffe, process_index=0,
                                               process_count=1)
    assert sum(int(b["valid"].sum()) for b in data) == data.num_examples > 0
  assert builders == ["synthetic_shapes/tiny"]
  assert sorted(splits) == ["synthetic_train", "synthetic_val"]
