"""The protobuf wire format of a ``.caffemodel``, as far as telling one
apart from other files needs (and :mod:`fcn_jax.readers.caffemodel` reads):
varints, strings and ``NetParameter``'s first fields.

Apart from :mod:`~fcn_jax.readers.caffemodel` so that
:func:`fcn_jax.readers._common.describe_file` can recognise a
``.caffemodel`` without importing the reader that imports it.
"""

from __future__ import annotations

# Protobuf wire types.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class Corrupt(Exception):
  """Raised inside the decoder; turned into a WeightFileError with the path."""

  def __init__(self, pos: int, reason: str):
    super().__init__(reason)
    self.pos = pos
    self.reason = reason


def varint(buf, pos: int, end: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= end:
      raise Corrupt(pos, "a number runs past the end of its message")
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise Corrupt(pos, "a number is longer than 10 bytes")


def string(buf, span) -> str:
  try:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")
  except UnicodeDecodeError:
    raise Corrupt(span[0], "a layer name is not UTF-8") from None


# NetParameter fields.
NET_V1_LAYERS = 2
NET_LAYER = 100

DESCRIPTION = "a Caffe .caffemodel (binary protobuf)"
# NetParameter's fields and their wire types: what a .caffemodel starts with.
_NET_FIELDS = {1: LENGTH_DELIMITED, 2: LENGTH_DELIMITED,
               3: LENGTH_DELIMITED, 4: VARINT, 5: VARINT,
               6: LENGTH_DELIMITED, 7: VARINT, 8: LENGTH_DELIMITED,
               NET_LAYER: LENGTH_DELIMITED}


def looks_like_caffemodel(head: bytes) -> bool:
  """Whether the first bytes of a file read as the start of a NetParameter:
  net fields (usually the name first), up to a layer whose first field is
  valid (a layer may run far past ``head``)."""
  pos, end = 0, len(head)
  try:
    for _ in range(2):
      key, pos = varint(head, pos, end)
      field, wire_type = key >> 3, key & 7
      if _NET_FIELDS.get(field) != wire_type:
        return False
      if wire_type == VARINT:
        _, pos = varint(head, pos, end)
        continue
      size, pos = varint(head, pos, end)
      if field in (NET_V1_LAYERS, NET_LAYER):
        key, _ = varint(head, pos, end)
        return 1 <= key >> 3 <= 200 and key & 7 in (VARINT,
                                                    LENGTH_DELIMITED)
      if pos + size > end or (field == 1 and not string(
          head, (pos, pos + size)).isprintable()):
        return False
      pos += size
    return True
  except Corrupt:
    return False
