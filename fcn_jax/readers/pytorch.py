"""Reads PyTorch state dicts: pytorch-fcn FCNs and torchvision's VGG16.

Two namings are understood, both mapped to Caffe layer names:

* pytorch-fcn (``torchfcn.models.FCN32s/16s/8s/8sAtOnce`` and their
  ``*_from_caffe.pth`` conversions): ``conv1_1.weight`` ... ``fc7.bias``,
  ``score_fr``, ``score_pool4``, ``score_pool3``, ``upscore*``. These already
  are Caffe layer names, and PyTorch's layouts are Caffe's: ``Conv2d`` is OIHW,
  ``ConvTranspose2d`` is ``(C_in, C_out, k, k)`` with Caffe's Deconvolution
  semantics, ``Linear`` is ``(out, in)``.
* torchvision ``vgg16`` (and pytorch-fcn's ``vgg16_from_caffe.pth``, which uses
  the same naming): ``features.N`` for the 13 convolutions and
  ``classifier.0/3/6`` for fc6/fc7/fc8. torchvision flattens pool5 in
  ``(C, H, W)`` order, as Caffe does, so ``classifier.0`` is a Caffe
  InnerProduct blob.

``torch`` is an optional dependency (``pip install 'fcn_jax[torch]'``); the
mapping itself (:func:`state_dict_to_layers`) needs only NumPy.
"""

from __future__ import annotations

import pickle
import re
from typing import Any, Mapping

import numpy as np

from fcn_jax.readers._common import LayerBlobs, WeightFileError, check_input_file

# torchvision vgg16: index in ``features`` / ``classifier`` -> Caffe layer.
TORCHVISION_VGG16_FEATURES = {
    0: "conv1_1", 2: "conv1_2", 5: "conv2_1", 7: "conv2_2", 10: "conv3_1",
    12: "conv3_2", 14: "conv3_3", 17: "conv4_1", 19: "conv4_2", 21: "conv4_3",
    24: "conv5_1", 26: "conv5_2", 28: "conv5_3"}
TORCHVISION_VGG16_CLASSIFIER = {0: "fc6", 3: "fc7", 6: "fc8"}

NAMINGS = ("pytorch", "torchvision")
_BLOB_INDEX = {"weight": 0, "bias": 1}
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")
_ZIP_OR_PICKLE = ("a zip archive (a PyTorch .pth saved by torch >= 1.6)",
                  "a Python pickle (a legacy PyTorch .pth)")


def _torchvision_layer(module_path: str) -> str | None:
  part, _, index = module_path.partition(".")
  table = {"features": TORCHVISION_VGG16_FEATURES,
           "classifier": TORCHVISION_VGG16_CLASSIFIER}.get(part)
  if table is None or not index.isdigit():
    return None
  return table.get(int(index))


def _naming_of(keys: list[str]) -> str:
  return ("torchvision" if any(k.startswith(("features.", "classifier."))
                               for k in keys) else "pytorch")


def state_dict_to_layers(state_dict: Mapping[str, np.ndarray], naming: str,
                         source: str = "the state dict") -> LayerBlobs:
  """Maps a state dict of NumPy arrays to ``{caffe layer: [weight, bias]}``.

  Args:
    state_dict: Parameter name -> array (``module.`` prefixes are stripped).
    naming: ``"pytorch"`` (pytorch-fcn names) or ``"torchvision"`` (VGG16).
    source: Where the dict came from, for messages.

  Raises:
    WeightFileError: the naming is the other one, a key is not a weight or
      bias (e.g. batch-norm statistics), or a torchvision index is not VGG16's.
  """
  if naming not in NAMINGS:
    raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}.")
  keys = [k[len("module."):] if k.startswith("module.") else k
          for k in state_dict]
  found = _naming_of(keys)
  if found != naming:
    raise WeightFileError(
        f"{source} uses {found} naming (e.g. {keys[0]!r}), not {naming}; use "
        f"--format {found}.")
  layers: dict[str, dict[int, np.ndarray]] = {}
  unknown = []
  for key, value in zip(keys, state_dict.values()):
    module_path, _, kind = key.rpartition(".")
    if naming == "torchvision":
      layer = _torchvision_layer(module_path)
    else:
      layer = module_path if "." not in module_path else None
    if not module_path or layer is None or kind not in _BLOB_INDEX:
      unknown.append(key)
      continue
    layers.setdefault(layer, {})[_BLOB_INDEX[kind]] = np.asarray(value)
  if unknown:
    bn = any(k.endswith(("running_mean", "running_var")) for k in unknown)
    hint = (" Batch-norm networks (e.g. torchvision vgg16_bn) are not FCN "
            "weights." if bn else "")
    raise WeightFileError(
        f"{source}: {len(unknown)} entries are not {naming} VGG16/FCN weights: "
        f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}.{hint}")
  result: LayerBlobs = {}
  for layer, blobs in layers.items():
    if 0 not in blobs:
      raise WeightFileError(f"{source}: layer {layer!r} has a bias but no "
                            "weight.")
    result[layer] = [blobs[i] for i in sorted(blobs)]
  return result


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """Finds the state dict inside a training checkpoint, if wrapped."""
  if isinstance(obj, Mapping):
    for key in _WRAPPER_KEYS:
      if isinstance(obj.get(key), Mapping):
        return obj[key]
    return obj
  raise WeightFileError(
      f"{path} holds a {type(obj).__name__}, not a state dict; save "
      "model.state_dict() with torch.save.")


def load_state_dict(path: str, fmt: str = "pytorch") -> dict[str, np.ndarray]:
  """Loads a ``.pth`` state dict (safely, ``weights_only``) as float arrays."""
  check_input_file(path, "a PyTorch .pth state dict", fmt,
                   accepted=_ZIP_OR_PICKLE)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise WeightFileError(
        f"reading {path} needs PyTorch: pip install 'fcn_jax[torch]' (or "
        "torch).") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # weights_only refuses pickled objects other than tensors and containers.
    classes = re.findall(r"GLOBAL (\S+)", str(e))
    if not classes:
      raise WeightFileError(
          f"{path}: torch.load failed (UnpicklingError: "
          f"{str(e).splitlines()[0]}). The file is truncated or not a PyTorch "
          "checkpoint; download it again.") from None
    raise WeightFileError(
        f"{path} holds a pickled {classes[0]} object (e.g. a whole model "
        "saved with torch.save(model)), not a state dict of tensors; fcn_jax "
        "does not unpickle objects, which can run arbitrary code. Load it in "
        "PyTorch and save model.state_dict() with torch.save.") from None
  except Exception as e:  # torch raises many types for bad files.
    raise WeightFileError(
        f"{path}: torch.load failed ({type(e).__name__}: {e}). The file is "
        "truncated or not a PyTorch checkpoint; download it again.") from None
  state_dict = _unwrap(obj, path)
  arrays = {}
  for key, value in state_dict.items():
    if not isinstance(value, torch.Tensor):
      raise WeightFileError(f"{path}: entry {key!r} is a "
                            f"{type(value).__name__}, not a tensor.")
    if not value.is_floating_point():
      arrays[key] = value.numpy()  # reported as unknown by the mapping
    else:
      arrays[key] = value.detach().to(torch.float32).numpy()
  if not arrays:
    raise WeightFileError(f"{path}: the state dict is empty.")
  return arrays


def read_pytorch_fcn(path: str) -> LayerBlobs:
  """Reads a pytorch-fcn ``.pth`` (``conv1_1.weight`` ... ``upscore8``)."""
  return state_dict_to_layers(load_state_dict(path, "pytorch"), "pytorch",
                              source=path)


def read_torchvision_vgg16(path: str) -> LayerBlobs:
  """Reads a torchvision-named VGG16 ``.pth`` (``features.N``/``classifier.N``)."""
  return state_dict_to_layers(load_state_dict(path, "torchvision"),
                              "torchvision", source=path)
