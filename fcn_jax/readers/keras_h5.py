"""Reads Keras VGG16 weights (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``).

Keras stores, per layer group, a kernel and a bias:

* convolutions ``blockB_convI``: HWIO kernels ``(kh, kw, in, out)``, applied as
  cross-correlation like Caffe's; they become Caffe OIHW here;
* ``fc1``/``fc2``/``predictions``: Dense kernels ``(in, out)``. ``fc1`` reads
  pool5 flattened channels-LAST, ``in = h*7*C + w*C + c``, whereas Caffe
  flattens ``(C, H, W)``, ``in = c*49 + h*7 + w``; the reader reorders it.

Both the weights-only layout (layer groups at the root, as the keras
applications release files) and a full ``model.save`` file (groups under
``model_weights``) are read. Names map to Caffe's: ``blockB_convI`` ->
``convB_I``, ``fc1`` -> ``fc6``, ``fc2`` -> ``fc7``, ``predictions`` -> ``fc8``.
"""

from __future__ import annotations

import math

import numpy as np

from fcn_jax.readers._common import LayerBlobs, WeightFileError, check_input_file

KERAS_VGG16_LAYERS = {
    **{f"block{b}_conv{i}": f"conv{b}_{i}"
       for b, depth in enumerate((2, 2, 3, 3, 3), start=1)
       for i in range(1, depth + 1)},
    "fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}
_LAST_CONV = "block5_conv3"
_HDF5 = ("an HDF5 file (Keras .h5)",)


def _datasets(group) -> list[np.ndarray]:
  """A layer group's weights, in the order Keras lists them."""
  import h5py  # pylint: disable=g-import-not-at-top
  names = [n.decode() if isinstance(n, bytes) else str(n)
           for n in group.attrs.get("weight_names", [])]
  if names:
    return [np.asarray(group[n]) for n in names]
  found = []
  group.visititems(lambda _, obj: found.append(np.asarray(obj))
                   if isinstance(obj, h5py.Dataset) else None)
  return found


def _kernel_and_bias(name: str, weights: list[np.ndarray], path: str):
  kernels = [w for w in weights if w.ndim >= 2]
  biases = [w for w in weights if w.ndim == 1]
  if len(kernels) != 1 or len(biases) != 1:
    raise WeightFileError(
        f"{path}: layer {name!r} should hold one kernel and one bias, found "
        f"shapes {[w.shape for w in weights]}.")
  return kernels[0].astype(np.float32), biases[0].astype(np.float32)


def _conv_to_caffe(name: str, kernel: np.ndarray, bias: np.ndarray,
                   path: str) -> np.ndarray:
  """HWIO -> OIHW, refusing Theano-ordered kernels."""
  if kernel.ndim != 4 or kernel.shape[3] != bias.shape[0]:
    if kernel.ndim == 4 and kernel.shape[0] == bias.shape[0]:
      raise WeightFileError(
          f"{path}: layer {name!r} has a channels-first (Theano 'th') kernel "
          f"{kernel.shape}; use vgg16_weights_tf_dim_ordering_tf_kernels.h5.")
    raise WeightFileError(f"{path}: layer {name!r} has kernel {kernel.shape} "
                          f"and bias {bias.shape}, not a 2-D convolution.")
  return kernel.transpose(3, 2, 0, 1)


def _flatten_hwc_to_chw(kernel: np.ndarray, channels: int,
                        path: str) -> np.ndarray:
  """Dense ``(in, out)`` reading an (h, w, c) flatten -> Caffe ``(out, in)``."""
  size_in, size_out = kernel.shape
  side = math.isqrt(size_in // channels) if channels else 0
  if side * side * channels != size_in:
    raise WeightFileError(
        f"{path}: fc1 has {size_in} inputs, which is not k*k*{channels} for the "
        f"{channels} channels of {_LAST_CONV}.")
  return (kernel.reshape(side, side, channels, size_out)
          .transpose(3, 2, 0, 1).reshape(size_out, size_in))


def read_keras_vgg16(path: str) -> LayerBlobs:
  """Reads a Keras VGG16 ``.h5`` into ``{caffe layer: [weight, bias]}``.

  Raises:
    WeightFileError: the file is missing, not HDF5, truncated, Theano-ordered,
      or has no VGG16 layers.
  """
  check_input_file(path, "a Keras VGG16 .h5", "keras", accepted=_HDF5)
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise WeightFileError(f"{path}: h5py cannot open it ({e}); the file is "
                          "truncated or corrupt. Download it again.") from None
  with f:
    root = f["model_weights"] if "model_weights" in f else f
    try:
      raw = {name: _datasets(root[name]) for name in KERAS_VGG16_LAYERS
             if name in root}
    except (OSError, KeyError) as e:
      raise WeightFileError(f"{path}: cannot read its datasets ({e}); the "
                            "file is truncated or corrupt.") from None
    if not raw:
      raise WeightFileError(
          f"{path}: no Keras VGG16 layers (block1_conv1 ... fc2) found; its top "
          f"level holds {sorted(root.keys())[:10]}.")
  layers: LayerBlobs = {}
  for name, weights in raw.items():
    kernel, bias = _kernel_and_bias(name, weights, path)
    if name.startswith("block"):
      layers[KERAS_VGG16_LAYERS[name]] = [
          _conv_to_caffe(name, kernel, bias, path), bias]
    elif kernel.ndim != 2 or kernel.shape[1] != bias.shape[0]:
      raise WeightFileError(f"{path}: dense layer {name!r} has kernel "
                            f"{kernel.shape} and bias {bias.shape}.")
    elif name == "fc1":
      if "conv5_3" not in layers:
        raise WeightFileError(f"{path}: fc1 present without {_LAST_CONV}, so "
                              "its input layout is unknown.")
      channels = layers["conv5_3"][0].shape[0]
      layers["fc6"] = [_flatten_hwc_to_chw(kernel, channels, path), bias]
    else:
      layers[KERAS_VGG16_LAYERS[name]] = [kernel.T, bias]
  return layers
