"""fcn_jax.export: the serialized artifact gives the model's logits.

A tiny random FCN-8s is saved as a training checkpoint, exported with
symbolic batch/height/width (and once with fixed ones), and run on images of
several sizes, against ``model.apply`` on the preprocessed images. One run
loads the artifact in a fresh process where importing fcn_jax's model code
(or Flax) fails, to show the loader needs JAX only.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from fcn_jax import errors
from fcn_jax import export
from fcn_jax.data import preprocessing
from tests import tiny_fcn  # pylint: disable=g-bad-import-order
from tests.helpers import jit_apply

REPO = pathlib.Path(__file__).resolve().parents[1]
# float32 logits of O(1..10); the artifact fuses the preprocessing into XLA
# (FMAs), so they differ from NumPy preprocessing + model.apply by rounding.
ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  model, variables = tiny_fcn.save_tiny_checkpoint(workdir, "fcn8s",
                                                   width_divisor=64)
  output = workdir / "model.jaxexport"
  result = export.export_checkpoint(str(workdir), platforms=("cpu",))
  export.save(result, str(output))
  return model, variables, output


def _expected(model, variables, images):
  return np.asarray(jit_apply(model, variables,
                                preprocessing.CAFFE_VGG(images)))


def test_symbolic_artifact_matches_the_model_at_any_size(exported):
  model, variables, output = exported
  loaded = export.load(str(output))
  rng = np.random.default_rng(0)
  for shape in ((1, 37, 50), (2, 64, 31), (3, 1, 9)):
    images = np.stack([tiny_fcn.random_image(rng, *shape[1:])
                       for _ in range(shape[0])])
    logits = loaded(images)
    assert logits.shape == shape + (21,) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, _expected(model, variables, images),
                               rtol=0, atol=ATOL)
  single = images[0]
  np.testing.assert_array_equal(loaded.predict(single),
                                np.argmax(loaded(single), -1))
  with pytest.raises(ValueError, match="uint8"):
    loaded(images.astype(np.float32))


def test_description_says_inputs_outputs_classes_and_preprocessing(exported):
  _, _, output = exported
  description = json.loads(pathlib.Path(str(output) + ".json").read_text())
  assert description["inputs"][0]["shape"] == ["batch", "height", "width", 3]
  assert description["inputs"][0]["dtype"] == "uint8"
  assert description["outputs"][0]["shape"] == ["batch", "height", "width",
                                                21]
  assert description["class_names"][15] == "person"
  assert preprocessing.Preprocessing.from_dict(
      description["preprocessing"]).matches(preprocessing.CAFFE_VGG)
  assert description["platforms"] == ["cpu"] and description["model"] == (
      "fcn8s")


def test_jnp_preprocessing_is_the_numpy_one():
  images = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), np.uint8)
  for preset in (preprocessing.CAFFE_VGG, preprocessing.TORCHVISION):
    np.testing.assert_allclose(
        np.asarray(jax.jit(lambda x, p=preset: export.preprocess(x, p))(
            images)), preset(images), rtol=1e-6, atol=1e-5)


def test_loader_needs_no_model_code(exported):
  model, variables, output = exported
  images = tiny_fcn.random_image(np.random.default_rng(2), 40, 45)[None]
  np.save(output.parent / "images.npy", images)
  script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "flax" or name in (
        "fcn_jax.models", "fcn_jax.checkpointing", "fcn_jax.models.weights"):
      raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from fcn_jax import errors
from fcn_jax import export
logits = export.load({str(output)!r})(np.load({str(output.parent)!r} +
                                               "/images.npy"))
np.save({str(output.parent)!r} + "/logits.npy", logits)
assert "flax" not in sys.modules
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                               "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_allclose(np.load(output.parent / "logits.npy"),
                             _expected(model, variables, images),
                             rtol=0, atol=ATOL)


def test_cli_fixed_shapes_and_errors(exported, tmp_path):
  model, variables, output = exported
  workdir = str(output.parent)
  fixed = tmp_path / "fixed.jaxexport"
  result = tiny_fcn.run_module(
      ["fcn_jax.export", "--checkpoint", workdir, "--output", str(fixed),
       "--batch", "2", "--height", "33", "--width", "40", "--platforms",
       "cpu"], tmp_path, REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  # It names what it exported, and Orbax's read-only warnings stay hidden.
  assert f"exported {workdir}/checkpoints/7 (step 7, --step best)" in (
      result.stdout)
  assert "read only" not in result.stderr
  assert "input uint8 [2, 33, 40, 3]" in result.stdout
  assert "differ from the model's by at most" in result.stdout
  loaded = export.load(str(fixed))
  images = np.stack([tiny_fcn.random_image(np.random.default_rng(i), 33, 40)
                     for i in range(2)])
  np.testing.assert_allclose(loaded(images),
                             _expected(model, variables, images),
                             rtol=0, atol=ATOL)
  with pytest.raises(ValueError, match="export with that dimension"):
    loaded(images[:, :32])
  bad = tiny_fcn.run_module(
      ["fcn_jax.export", "--checkpoint", workdir, "--output", str(fixed),
       "--height", "33"], tmp_path, REPO)
  assert bad.returncode == 2 and "error: give --height and --width" in (
      bad.stderr) and "Traceback" not in bad.stderr
  # The one overwrite rule: an existing artifact stays, unless --overwrite
  # (checked before anything is loaded); --batch is the old --batch_size.
  before = fixed.read_bytes()
  assert export.main(["--checkpoint", workdir, "--output", str(fixed),
                      "--batch", "2", "--height", "33", "--width", "40"]) == 2
  assert fixed.read_bytes() == before
  with pytest.raises(ValueError, match="not a serialized jax.export"):
    (tmp_path / "junk.jaxexport").write_bytes(b"junk")
    export.load(str(tmp_path / "junk.jaxexport"))


def test_several_inputs_or_outputs_are_refused_by_name(tmp_path):
  tiny_fcn.save_tiny_checkpoint(tmp_path, "siftflow_fcn32s", width_divisor=64)
  with pytest.raises(ValueError, match="siftflow_fcn32s takes or gives "
                     r"several arrays.*\['geo', 'sem'\].*fcn_jax.predict"):
    export.export_checkpoint(str(tmp_path), platforms=("cpu",))


@pytest.mark.parametrize("where", ["under_a_file", "read_only_folder",
                                   "a_folder"])
def test_an_unwritable_output_is_refused_before_the_work(
    exported, tmp_path, monkeypatch, capsys, where):
  from fcn_jax import cli  # pylint: disable=g-import-not-at-top
  if where == "read_only_folder" and os.geteuid() == 0:
    pytest.skip("root writes into read-only folders")
  (tmp_path / "file").write_text("x")
  (tmp_path / "locked").mkdir()
  (tmp_path / "locked").chmod(0o500)
  output = {"under_a_file": tmp_path / "file" / "model.jaxexport",
            "read_only_folder": tmp_path / "locked" / "model.jaxexport",
            "a_folder": tmp_path / "locked"}[where]

  def must_not_run(*args, **kwargs):
    raise AssertionError("exported before checking the output")
  monkeypatch.setattr(export, "export_checkpoint", must_not_run)
  monkeypatch.setattr(cli, "start", lambda *args, **kwargs: None)
  before = sorted(tmp_path.rglob("*"))
  code = export.main(["--checkpoint", str(exported[2].parent), "--output",
                      str(output)])
  err = capsys.readouterr().err
  assert code != 0 and err.count("\n") == 1 and err.startswith("error: ")
  assert f"--output {output}" in err
  assert {"under_a_file": "under a regular file",
          "read_only_folder": "cannot write in the folder",
          "a_folder": "is a folder"}[where] in err
  assert sorted(tmp_path.rglob("*")) == before  # No .tmp left.


def test_a_full_disk_names_the_file_and_the_fix(exported, tmp_path,
                                                monkeypatch):
  """ENOSPC part-way through the write (simulated): one line naming the file
  and the fix; no temporary file, and the artifact already there intact."""
  import errno  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  result = export.export_checkpoint(str(exported[2].parent),
                                    platforms=("cpu",))
  output = tmp_path / "model.jaxexport"
  output.write_bytes(b"the older artifact")

  class FullDisk(io.FileIO):

    def write(self, data):
      super().write(bytes(data)[:10])
      raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(export, "open", FullDisk, raising=False)
  with pytest.raises(errors.UserError) as raised:
    export.save(result, str(output))
  assert str(raised.value).startswith(f"cannot write {output} (")
  assert str(raised.value).endswith(
      "No space left on device; free space on that disk or give an --output "
      "on another one")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model.jaxexport"]
  assert output.read_bytes() == b"the older artifact"


def test_a_bad_step_is_one_line_with_the_accepted_values(capsys):
  with pytest.raises(SystemExit) as exited:
    export.main(["--checkpoint", "c", "--output", "o", "--step", "bestt"])
  err = capsys.readouterr().err
  assert exited.value.code == 2 and err.count("\n") == 1
  assert err.startswith("error: --step 'bestt': give best") and (
      "latest, or a step number" in err)
