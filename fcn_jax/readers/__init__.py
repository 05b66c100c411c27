"""Readers for pretrained weight files, one small module per format.

Every reader returns the same thing, ``{caffe_layer_name: [blobs]}`` with the
blobs in Caffe layouts (see :mod:`fcn_jax.readers._common`), which
:func:`fcn_jax.models.weights.from_caffe_layers` maps onto a model. :data:`FORMATS`
records, per format, the reader and the preprocessing its weights expect.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from fcn_jax import errors
from fcn_jax.readers._common import LayerBlobs, WeightFileError
from fcn_jax.readers.caffemodel import read_caffemodel
from fcn_jax.readers.keras_h5 import read_keras_vgg16
from fcn_jax.readers.pytorch import read_pytorch_fcn, read_torchvision_vgg16


@dataclasses.dataclass(frozen=True)
class WeightFormat:
  """One ``--format``: how to read it and what inputs its weights expect.

  Attributes:
    name: The ``--format`` value.
    read: ``path -> LayerBlobs``.
    preprocessing: Name of the :mod:`fcn_jax.data.preprocessing` preset the
      weights were trained with.
    description: The files it reads, for ``--help``.
  """
  name: str
  read: Callable[[str], LayerBlobs]
  preprocessing: str
  description: str


FORMATS: dict[str, WeightFormat] = {f.name: f for f in (
    WeightFormat("caffemodel", read_caffemodel, "caffe_vgg",
                 "Caffe .caffemodel: the released FCN models and "
                 "VGG_ILSVRC_16_layers (BGR, Caffe mean)"),
    WeightFormat("pytorch", read_pytorch_fcn, "caffe_vgg",
                 "pytorch-fcn .pth (conv1_1.weight ...): conversions of the "
                 "Caffe models (BGR, Caffe mean)"),
    WeightFormat("torchvision", read_torchvision_vgg16, "torchvision",
                 "torchvision-named VGG16 .pth (features.N, classifier.N); "
                 "torchvision's own weights are RGB, /255, ImageNet mean/std"),
    WeightFormat("keras", read_keras_vgg16, "keras_vgg",
                 "Keras vgg16_weights_tf_dim_ordering_tf_kernels.h5 (BGR, "
                 "Caffe-style mean)"),
)}


def read_layers(path: str, fmt: str) -> LayerBlobs:
  """Reads ``path`` in format ``fmt`` (a key of :data:`FORMATS`)."""
  if fmt not in FORMATS:
    raise errors.UserError(f"Unknown weights format {fmt!r}; choose one of "
                           f"{sorted(FORMATS)}.")
  return FORMATS[fmt].read(path)


__all__ = ["FORMATS", "LayerBlobs", "WeightFileError", "WeightFormat",
           "read_caffemodel", "read_keras_vgg16", "read_layers",
           "read_pytorch_fcn", "read_torchvision_vgg16"]
