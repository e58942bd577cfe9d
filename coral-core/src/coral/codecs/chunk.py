"""The encoded-chunk format: a fixed header, an optional base id, then the codec's body.

Header (32 bytes, little-endian): magic ``CRLC``, version, codec, element size, delta depth, decoded length
(u64), plane mask (u32), 12 reserved bytes. Delta chunks follow it with the 32-byte base id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import delta as _delta
from .planes import decode_planes, encode_planes

MAGIC = b"CRLC"
VERSION = 1
CODEC_RAW = 0
CODEC_PLANES = 1
CODEC_DELTA_XOR = 2
CODEC_DELTA_SUB = 3
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_PLANES: "planes+zstd", CODEC_DELTA_XOR: "delta-xor", CODEC_DELTA_SUB: "delta-sub"}
_HEADER = struct.Struct("<4sBBBBQI12x")
HEADER_SIZE = _HEADER.size
ID_BYTES = 32


@dataclass(frozen=True)
class ChunkHeader:
    codec: int
    itemsize: int
    depth: int
    length: int
    mask: int
    base: str | None  # hex id of the delta base

    @property
    def size(self) -> int:
        return HEADER_SIZE + (ID_BYTES if self.base else 0)


def _pack(codec: int, itemsize: int, depth: int, length: int, mask: int, base: str | None) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, codec, itemsize, depth, length, mask)
    return head + (bytes.fromhex(base) if base else b"")


def parse_header(blob: bytes | memoryview) -> ChunkHeader:
    """Parse and sanity-check a header; raises ValueError on anything malformed."""
    if len(blob) < HEADER_SIZE:
        raise ValueError("object shorter than a chunk header")
    magic, version, codec, itemsize, depth, length, mask = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a Coral chunk (bad magic or version)")
    if codec not in CODEC_NAMES or itemsize not in (1, 2, 4, 8, 16) or length % itemsize:
        raise ValueError("bad chunk header fields")
    base = None
    if codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB):
        if len(blob) < HEADER_SIZE + ID_BYTES:
            raise ValueError("truncated delta header")
        base = bytes(blob[HEADER_SIZE : HEADER_SIZE + ID_BYTES]).hex()
    return ChunkHeader(codec, itemsize, depth, length, mask, base)


def _plane_size(itemsize: int) -> int:
    # complex128 is split on 8-byte lanes by the delta codec; planes work on any element size
    return itemsize


def encode_chunk(data: memoryview | bytes, itemsize: int, *, level: int = 1, compress: bool = True) -> bytes:
    """Encode without a base: planes+zstd when it is smaller, else raw."""
    length = len(data)
    if compress and length >= 64:
        mask, body = encode_planes(data, _plane_size(itemsize), level)
        if mask and len(body) < length:
            return _pack(CODEC_PLANES, itemsize, 0, length, mask, None) + body
    return _pack(CODEC_RAW, itemsize, 0, length, 0, None) + bytes(data)


def encode_delta(
    data: memoryview | bytes,
    base: memoryview | bytes,
    base_id: str,
    base_depth: int,
    itemsize: int,
    *,
    is_float: bool,
    level: int = 3,
) -> bytes:
    """Encode ``data`` as the smaller of its XOR and integer-difference residuals against ``base``."""
    if len(base) != len(data):
        raise ValueError("delta base has a different length")
    lanes = 8 if itemsize == 16 else itemsize
    candidates = [(CODEC_DELTA_XOR, _delta.xor_residual(data, base, itemsize))]
    if not is_float or itemsize in (2,):
        candidates.append((CODEC_DELTA_SUB, _delta.sub_residual(data, base, itemsize)))
    best: bytes | None = None
    for codec, residual in candidates:
        mask, body = encode_planes(memoryview(residual).cast("B"), lanes, level, sample=False)
        blob = _pack(codec, itemsize, base_depth + 1, len(data), mask, base_id) + body
        if best is None or len(blob) < len(best):
            best = blob
    assert best is not None
    return best


def decode_chunk(blob: bytes | memoryview, get_base: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """Decode an encoded chunk to a uint8 array; ``get_base(id)`` supplies decoded delta bases."""
    head = parse_header(blob)
    body = memoryview(blob)[head.size :]
    out = np.empty(head.length, dtype=np.uint8)
    if head.codec == CODEC_RAW:
        if len(body) != head.length:
            raise ValueError("raw body has the wrong length")
        out[:] = np.frombuffer(body, dtype=np.uint8)
        return out
    lanes = 8 if head.itemsize == 16 else head.itemsize
    if head.codec == CODEC_PLANES:
        decode_planes(body, head.itemsize, head.mask, head.length, out)
        return out
    if get_base is None:
        raise ValueError("delta chunk needs its base")
    residual = np.empty(head.length, dtype=np.uint8)
    decode_planes(body, lanes, head.mask, head.length, residual)
    base = get_base(head.base)  # type: ignore[arg-type]
    if base.nbytes != head.length:
        raise ValueError("delta base has the wrong length")
    if head.codec == CODEC_DELTA_XOR:
        _delta.xor_apply(residual, base, head.itemsize, out)
    else:
        _delta.sub_apply(residual, base, head.itemsize, out)
    return out
