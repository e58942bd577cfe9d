"""Byte-plane split + zstd: byte k of every element goes to plane k; only planes that compress are compressed.

For fp32 weights the sign/exponent byte and the high mantissa byte compress well and the low mantissa
bytes are noise; compressing only the planes that pay keeps zstd off most of the bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

_SAMPLE = 64 * 1024
_PAYS = 0.92  # compress a plane only when a sample shrinks below this fraction


def split_planes(data: memoryview | bytes, itemsize: int) -> np.ndarray:
    """Return an (itemsize, n) uint8 array: row k holds byte k of every element."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if itemsize == 1:
        return arr.reshape(1, -1)
    return np.ascontiguousarray(arr.reshape(-1, itemsize).T)


def join_planes(planes: np.ndarray, out: np.ndarray) -> None:
    """Inverse of split_planes, writing into ``out`` (uint8, length itemsize * n)."""
    itemsize = planes.shape[0]
    if itemsize == 1:
        out[:] = planes[0]
    else:
        out.reshape(-1, itemsize)[:] = planes.T


def encode_planes(data: memoryview | bytes, itemsize: int, level: int, sample: bool = True) -> tuple[int, bytes]:
    """Encode as planes; returns (mask of compressed planes, body). Body = per plane: u64 length + bytes."""
    planes = split_planes(data, itemsize)
    cctx = zstandard.ZstdCompressor(level=level)
    mask = 0
    parts: list[bytes] = []
    for k in range(planes.shape[0]):
        plane = planes[k]
        payload: bytes | memoryview = memoryview(plane)
        use = True
        if sample and plane.nbytes > 4 * _SAMPLE:
            probe = cctx.compress(memoryview(plane[:_SAMPLE]))
            use = len(probe) < _PAYS * _SAMPLE
        if use and plane.nbytes:
            packed = cctx.compress(memoryview(plane))
            if len(packed) < _PAYS * plane.nbytes:
                payload = packed
                mask |= 1 << k
        parts.append(struct.pack("<Q", len(payload)))
        parts.append(bytes(payload) if isinstance(payload, memoryview) else payload)
    return mask, b"".join(parts)


def decode_planes(body: memoryview, itemsize: int, mask: int, length: int, out: np.ndarray) -> None:
    """Decode a planes body into ``out`` (uint8 array of ``length`` bytes)."""
    n = length // itemsize
    planes = np.empty((itemsize, n), dtype=np.uint8)
    dctx = zstandard.ZstdDecompressor()
    pos = 0
    for k in range(itemsize):
        (size,) = struct.unpack_from("<Q", body, pos)
        pos += 8
        payload = body[pos : pos + size]
        if len(payload) != size:
            raise ValueError("truncated plane")
        pos += size
        if mask & (1 << k):
            raw = dctx.decompress(payload, max_output_size=n)
            if len(raw) != n:
                raise ValueError("plane decodes to the wrong length")
            planes[k] = np.frombuffer(raw, dtype=np.uint8)
        else:
            if size != n:
                raise ValueError("raw plane has the wrong length")
            planes[k] = np.frombuffer(payload, dtype=np.uint8)
    if pos != len(body):
        raise ValueError("trailing bytes after planes")
    join_planes(planes, out)
