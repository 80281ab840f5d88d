"""A byte-level container per image: a transform-index byte, then the codec's streams, length-prefixed.

Only the codec's stream bytes and the index's ceil(log2(n)) bits are counted in bpp (CompressAI does not
count stream lengths or image size either; they are framing/header, shared by every method compared).
"""

from __future__ import annotations

import struct

_LEN = struct.Struct(">I")


def pack(index: int, streams: list[bytes]) -> bytes:
    if not 0 <= index < 256 or len(streams) > 255:
        raise ValueError(f"cannot pack index {index} with {len(streams)} streams")
    parts = [bytes([index, len(streams)])]
    for stream in streams:
        parts += [_LEN.pack(len(stream)), bytes(stream)]
    return b"".join(parts)


def unpack(data: bytes) -> tuple[int, list[bytes]]:
    """Inverse of pack: (index, streams)."""
    if len(data) < 2:
        raise ValueError("truncated container: no header")
    index, count = data[0], data[1]
    pos, streams = 2, []
    for _ in range(count):
        if pos + _LEN.size > len(data):
            raise ValueError("truncated container: missing stream length")
        (length,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + length > len(data):
            raise ValueError("truncated container: stream shorter than its length")
        streams.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise ValueError(f"container has {len(data) - pos} trailing bytes")
    return index, streams
