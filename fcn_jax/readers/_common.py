"""What every weights reader shares: the error type, the layer mapping, sniffing.

Readers turn a file into one mapping, ``{caffe_layer_name: [blob, ...]}``, with
every blob in Caffe's layout (convolution OIHW, InnerProduct ``(out, in)``,
Deconvolution ``(C_in, C_out, k, k)``), so that
:func:`fcn_jax.models.weights.from_caffe_layers` is the one place that maps weights
onto a model.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from fcn_jax import errors
from fcn_jax.readers import _wire

# Caffe layer name -> that layer's parameter blobs, in Caffe layouts.
LayerBlobs = Dict[str, List[np.ndarray]]


class WeightFileError(errors.UserError):
  """A weights file that cannot be read: missing, truncated or another format."""


# (leading bytes, what the file is, the --format that reads it).
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5)", "keras"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pth saved by torch >= 1.6)",
     "pytorch or torchvision"),
    (b"\x80", "a Python pickle (a legacy PyTorch .pth)",
     "pytorch or torchvision"),
    (b"\x1f\x8b", "a gzip archive", None),
)
_TEXT_BYTES = frozenset(range(0x20, 0x7f)) | {0x09, 0x0a, 0x0d}


def describe_file(path: str) -> tuple[str, str | None] | None:
  """Guesses what a file is from its first bytes.

  Returns:
    ``(description, format)`` where ``format`` names the ``--format`` that
    reads such files (or None), or None when nothing is recognised.
  """
  with open(path, "rb") as f:
    head = f.read(512)
  for magic, description, fmt in _SIGNATURES:
    if head.startswith(magic):
      return description, fmt
  stripped = head.lstrip()
  if stripped[:1] == b"<":
    return ("an HTML/XML page (often a failed download: the link returned an "
            "error page instead of the file)", None)
  if head and all(b in _TEXT_BYTES for b in head):
    return ("a text file (a .prototxt network definition or similar, not "
            "weights)", None)
  if _wire.looks_like_caffemodel(head):
    return _wire.DESCRIPTION, "caffemodel"
  return None


def check_input_file(path: str, expected: str, fmt: str,
                     accepted: tuple[str, ...] = ()) -> None:
  """Raises :class:`WeightFileError` unless ``path`` may be a ``fmt`` file.

  Args:
    path: The file to read.
    expected: What a file of this format is, for messages (e.g. "a Caffe
      .caffemodel").
    fmt: The ``--format`` being used.
    accepted: Descriptions from :func:`describe_file` that this format accepts.
  """
  if not os.path.exists(path):
    raise WeightFileError(f"{path}: no such file.")
  if not os.path.isfile(path):
    raise WeightFileError(f"{path}: not a regular file.")
  if os.path.getsize(path) == 0:
    raise WeightFileError(f"{path}: the file is empty (a failed download?).")
  guess = describe_file(path)
  if guess is None or guess[0] in accepted:
    return
  description, other_format = guess
  hint = f" Use --format {other_format}." if other_format else ""
  raise WeightFileError(
      f"{path} is {description}, not {expected} (--format {fmt}).{hint}")
