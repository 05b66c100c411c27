"""Reads Caffe ``.caffemodel`` files without Caffe or generated protobuf code.

A ``.caffemodel`` is a binary protobuf ``NetParameter``. This module decodes the
protobuf wire format directly and reads only what weights need. The field
numbers are Caffe's ``src/caffe/proto/caffe.proto``:

* ``NetParameter``: ``name = 1``, ``layers = 2`` (legacy ``V1LayerParameter``,
  used by ``VGG_ILSVRC_16_layers.caffemodel``), ``layer = 100``
  (``LayerParameter``).
* ``LayerParameter``: ``name = 1``, ``type = 2`` (string), ``blobs = 7``.
* ``V1LayerParameter``: ``name = 4``, ``type = 5`` (enum), ``blobs = 6``, and the
  even older ``V0LayerParameter layer = 1`` (``name = 1``, ``type = 2``,
  ``blobs = 50``).
* ``BlobProto``: legacy ``num = 1``, ``channels = 2``, ``height = 3``,
  ``width = 4``; ``data = 5`` (packed float), ``diff = 6`` (skipped),
  ``shape = 7`` (``BlobShape``: ``dim = 1``, packed int64),
  ``double_data = 8``, ``double_diff = 9`` (skipped).

As in Caffe's ``Blob::FromProto``, legacy 4-D dimensions win over ``shape``
when present. Blobs keep Caffe's layouts; nothing is reshaped here.
"""

from __future__ import annotations

import math
import mmap
from typing import Iterator

import numpy as np

from fcn_jax.readers._common import LayerBlobs, WeightFileError, check_input_file
from fcn_jax.readers._wire import DESCRIPTION
from fcn_jax.readers._wire import Corrupt as _Corrupt
from fcn_jax.readers._wire import FIXED32 as _FIXED32
from fcn_jax.readers._wire import FIXED64 as _FIXED64
from fcn_jax.readers._wire import LENGTH_DELIMITED as _LENGTH_DELIMITED
from fcn_jax.readers._wire import NET_LAYER as _NET_LAYER
from fcn_jax.readers._wire import NET_V1_LAYERS as _NET_V1_LAYERS
from fcn_jax.readers._wire import VARINT as _VARINT
from fcn_jax.readers._wire import string as _string
from fcn_jax.readers._wire import varint as _varint

# LayerParameter fields.
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
# V1LayerParameter fields.
_V1_V0_LAYER, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 4, 5, 6
# V0LayerParameter fields.
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
# BlobProto fields.
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
# BlobShape fields.
_SHAPE_DIM = 1

def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, object]]:
  """Yields ``(field, wire_type, value)`` for one message.

  ``value`` is an int for varints and a ``(start, end)`` byte range otherwise.
  """
  pos = start
  while pos < end:
    key, pos = _varint(buf, pos, end)
    field, wire_type = key >> 3, key & 7
    if field == 0:
      raise _Corrupt(pos, "field number 0")
    if wire_type == _VARINT:
      value, pos = _varint(buf, pos, end)
      yield field, wire_type, value
      continue
    if wire_type == _LENGTH_DELIMITED:
      size, pos = _varint(buf, pos, end)
    elif wire_type == _FIXED64:
      size = 8
    elif wire_type == _FIXED32:
      size = 4
    else:
      raise _Corrupt(pos, f"unsupported wire type {wire_type}")
    if pos + size > end:
      raise _Corrupt(pos, f"a {size}-byte field runs {pos + size - end} bytes "
                     "past the end of its message")
    yield field, wire_type, (pos, pos + size)
    pos += size


def _numbers(buf, wire_type: int, value, dtype: str) -> np.ndarray:
  """Decodes a packed (or one unpacked) float/double field into a copy."""
  itemsize = np.dtype(dtype).itemsize
  start, end = value
  if wire_type == _LENGTH_DELIMITED:
    if (end - start) % itemsize:
      raise _Corrupt(start, f"packed data of {end - start} bytes is not a "
                     f"multiple of {itemsize}")
  elif (wire_type, itemsize) not in ((_FIXED32, 4), (_FIXED64, 8)):
    raise _Corrupt(start, "blob data has the wrong wire type")
  return np.frombuffer(buf, dtype, (end - start) // itemsize, start).copy()


def _blob_shape(buf, span) -> tuple[int, ...]:
  dims = []
  for field, wire_type, value in _fields(buf, *span):
    if field != _SHAPE_DIM:
      continue
    if wire_type == _VARINT:
      dims.append(value)
    elif wire_type == _LENGTH_DELIMITED:
      pos, end = value
      while pos < end:
        dim, pos = _varint(buf, pos, end)
        dims.append(dim)
    else:
      raise _Corrupt(span[0], "a blob dimension has the wrong wire type")
  return tuple(dims)


def _blob(buf, span) -> np.ndarray:
  """Decodes one BlobProto into an array of its Caffe shape."""
  legacy, shape, floats, doubles = {}, None, [], []
  for field, wire_type, value in _fields(buf, *span):
    if field in _BLOB_LEGACY_DIMS and wire_type == _VARINT:
      legacy[field] = value
    elif field == _BLOB_SHAPE and wire_type == _LENGTH_DELIMITED:
      shape = _blob_shape(buf, value)
    elif field == _BLOB_DATA:
      floats.append(_numbers(buf, wire_type, value, "<f4"))
    elif field == _BLOB_DOUBLE_DATA:
      doubles.append(_numbers(buf, wire_type, value, "<f8"))
    # diff, double_diff and unknown fields are skipped.
  if legacy:
    shape = tuple(legacy.get(f, 0) for f in _BLOB_LEGACY_DIMS)
  elif shape is None:
    shape = ()
  if floats and doubles:
    raise _Corrupt(span[0], "a blob has both float and double data")
  chunks = floats or doubles
  if len(chunks) == 1:
    data = chunks[0]
  else:
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
  if data.size != math.prod(shape):
    raise _Corrupt(span[0], f"a blob of shape {shape} needs "
                   f"{math.prod(shape)} values but holds {data.size}")
  native = np.float64 if doubles else np.float32
  return data.reshape(shape).astype(native, copy=False)


def _layer(buf, span, name_field: int, type_field: int, blobs_field: int,
           ) -> tuple[str | None, object, list[np.ndarray], object]:
  """Decodes a (V0/V1/current) layer: ``(name, type, blobs, v0_span)``."""
  name, layer_type, blobs, v0 = None, None, [], None
  for field, wire_type, value in _fields(buf, *span):
    if field == name_field and wire_type == _LENGTH_DELIMITED:
      name = _string(buf, value)
    elif field == type_field:
      layer_type = (_string(buf, value) if wire_type == _LENGTH_DELIMITED
                    else value)
    elif field == blobs_field and wire_type == _LENGTH_DELIMITED:
      blobs.append(_blob(buf, value))
    elif (name_field == _V1_NAME and field == _V1_V0_LAYER
          and wire_type == _LENGTH_DELIMITED):
      v0 = value
  return name, layer_type, blobs, v0


def _net_layers(buf, size: int) -> list[tuple[str, object, list[np.ndarray]]]:
  """Every layer of a NetParameter as ``(name, type, blobs)``."""
  layers = []
  for field, wire_type, value in _fields(buf, 0, size):
    if wire_type != _LENGTH_DELIMITED:
      continue
    if field == _NET_LAYER:
      name, layer_type, blobs, _ = _layer(buf, value, _LAYER_NAME, _LAYER_TYPE,
                                          _LAYER_BLOBS)
    elif field == _NET_V1_LAYERS:
      name, layer_type, blobs, v0 = _layer(buf, value, _V1_NAME, _V1_TYPE,
                                           _V1_BLOBS)
      if v0 is not None:  # a V0 layer wrapped in a V1 one
        v0_name, v0_type, v0_blobs, _ = _layer(buf, v0, _V0_NAME, _V0_TYPE,
                                               _V0_BLOBS)
        name = name or v0_name
        layer_type = layer_type if layer_type is not None else v0_type
        blobs = blobs or v0_blobs
    else:
      continue
    layers.append((name, layer_type, blobs))
  return layers


def read_caffemodel(path: str) -> LayerBlobs:
  """Reads a ``.caffemodel`` into ``{layer name: [blobs in Caffe layout]}``.

  Only layers with parameter blobs are returned. Blobs are float32 (or float64
  for ``double_data``) arrays of the stored shape: ``shape`` when given, else
  the legacy ``(num, channels, height, width)``.

  Raises:
    WeightFileError: the file is missing, of another format, truncated or
      corrupt, holds no weights, or names two weighted layers alike.
  """
  check_input_file(path, DESCRIPTION, "caffemodel", accepted=(DESCRIPTION,))
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0,
                                        access=mmap.ACCESS_READ) as buf:
    try:
      layers = _net_layers(buf, len(buf))
    except _Corrupt as e:
      raise WeightFileError(
          f"{path}: truncated or corrupt .caffemodel ({e.reason}, near byte "
          f"{e.pos} of {len(buf)}). Download the file again.") from None
  result: LayerBlobs = {}
  for index, (name, _, blobs) in enumerate(layers):
    if not blobs:
      continue
    if not name:
      raise WeightFileError(f"{path}: layer #{index} has weights but no name.")
    if name in result:
      raise WeightFileError(f"{path}: two layers with weights are both named "
                            f"{name!r}.")
    result[name] = blobs
  if not result:
    raise WeightFileError(
        f"{path}: no layer with weights found; a .caffemodel is a binary "
        "NetParameter with trained blobs (a .prototxt or .solverstate is not).")
  return result
