"""Byte-plane split + zstd: byte k of every element goes to plane k; only planes that compress are compressed.

For fp32 weights the sign/exponent byte compresses well and the mantissa bytes are noise; compressing only
the planes that pay keeps zstd off most of the bytes. Planes are gathered and scattered with strided copies
(no full transpose), and zstd contexts are reused per thread.
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

_SAMPLE = 64 * 1024
SAMPLE_BYTES = _SAMPLE  # bytes per sample in estimates; public for the re-encoder's early cut-off
PLANE_PAYS = 0.92  # compress a plane only when a sample shrinks below this fraction
_LEN = struct.Struct("<Q")
_local = threading.local()


def compressor(level: int) -> zstandard.ZstdCompressor:
    """A zstd compressor for ``level``, reused by the calling thread (contexts are not thread-safe)."""
    cache = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    c = cache.get(level)
    if c is None:
        if level == 1:
            # level 1's fast strategy with 7-byte minimum matches: byte planes are mostly literals, and short
            # matches cost more than they save there (smaller and ~25% faster than plain level 1 on weights)
            params = zstandard.ZstdCompressionParameters(
                window_log=20, hash_log=12, chain_log=12, search_log=1, min_match=7, target_length=0,
                strategy=zstandard.STRATEGY_FAST,
            )
            c = zstandard.ZstdCompressor(compression_params=params)
        else:
            c = zstandard.ZstdCompressor(level=level)
        cache[level] = c
    return c


def decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _plane(arr: np.ndarray, itemsize: int, k: int) -> np.ndarray:
    """Byte k of every element, as a strided view (no copy)."""
    return arr[k::itemsize] if itemsize > 1 else arr


def split_planes(data: memoryview | bytes, itemsize: int) -> np.ndarray:
    """Return an (itemsize, n) uint8 array: row k holds byte k of every element."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if itemsize == 1:
        return arr.reshape(1, -1)
    out = np.empty((itemsize, arr.size // itemsize), dtype=np.uint8)
    for k in range(itemsize):
        out[k] = arr[k::itemsize]
    return out


def join_planes(planes: np.ndarray, out: np.ndarray) -> None:
    """Inverse of split_planes, writing into ``out`` (uint8, length itemsize * n)."""
    itemsize = planes.shape[0]
    for k in range(itemsize):
        out[k::itemsize] = planes[k]


def plane_estimates(data: memoryview | bytes, itemsize: int, level: int, sample: int = _SAMPLE) -> list[float]:
    """Estimated compressed fraction of each plane, from zstd on the plane's first ``sample`` bytes."""
    arr = np.frombuffer(data, dtype=np.uint8)
    n = arr.size // itemsize
    m = min(n, sample)
    if m == 0:
        return [1.0] * itemsize
    head = arr[: m * itemsize]
    c = compressor(level)
    out = []
    for k in range(itemsize):
        probe = np.ascontiguousarray(_plane(head, itemsize, k))
        out.append(min(1.0, len(c.compress(probe.data)) / m))
    return out


def entropy_estimates(
    data: memoryview | bytes, itemsize: int, sample: int = 8 * 1024, give_up_above: float | None = None
) -> list[float]:
    """Order-0 entropy of each plane's first ``sample`` bytes, as a fraction of 8 bits: a zstd-free guess
    (zstd's Huffman stage lands near it; repeats only make zstd better), cheap enough for the save path.

    Planes are measured from the lowest byte up (mantissa noise first); once the kept fraction already
    exceeds ``give_up_above`` the remaining planes are reported as 1.0 (incompressible) without measuring.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    m = min(arr.size // itemsize, sample)
    if m == 0:
        return [1.0] * itemsize
    head = arr[: m * itemsize]
    out = []
    kept = 0.0
    for k in range(itemsize):
        if give_up_above is not None and kept > give_up_above * itemsize:
            out.append(1.0)
            continue
        counts = np.bincount(_plane(head, itemsize, k), minlength=256)
        p = counts[counts > 0] / m
        e = min(1.0, float(-(p * np.log2(p)).sum()) / 8 + 0.01)
        kept += e if e < PLANE_PAYS else 1.0
        out.append(e)
    return out


def encode_planes(
    data: memoryview | bytes, itemsize: int, level: int, sample: bool = True, *, estimates: list[float] | None = None
) -> tuple[int, bytes]:
    """Encode as planes; returns (mask of compressed planes, body). Body = per plane: u64 length + bytes.

    With ``sample`` a plane of a big chunk is compressed only when its 64 KiB sample shrinks below 92%
    (``estimates`` may pass those fractions in when the caller already measured them).
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    n = arr.size // itemsize
    if sample and n > 4 * _SAMPLE and estimates is None:
        estimates = plane_estimates(data, itemsize, level)
    elif not sample or n <= 4 * _SAMPLE:
        estimates = None
    c = compressor(level)
    mask = 0
    parts: list[bytes | memoryview] = []
    for k in range(itemsize):
        plane = np.ascontiguousarray(_plane(arr, itemsize, k))
        payload: bytes | memoryview = plane.data
        if n and (estimates is None or estimates[k] < PLANE_PAYS):
            packed = c.compress(plane.data)
            if len(packed) < PLANE_PAYS * n:
                payload = packed
                mask |= 1 << k
        parts.append(_LEN.pack(len(payload)))
        parts.append(payload)
    return mask, b"".join(parts)


def decode_planes(body: memoryview, itemsize: int, mask: int, length: int, out: np.ndarray) -> None:
    """Decode a planes body into ``out`` (uint8 array of ``length`` bytes)."""
    n = length // itemsize
    body = memoryview(body)
    d = decompressor()
    pos = 0
    for k in range(itemsize):
        if pos + 8 > len(body):
            raise ValueError("truncated plane header")
        (size,) = _LEN.unpack_from(body, pos)
        pos += 8
        payload = body[pos : pos + size]
        if len(payload) != size:
            raise ValueError("truncated plane")
        pos += size
        if mask & (1 << k):
            try:
                declared = zstandard.frame_content_size(payload)
            except zstandard.ZstdError as exc:
                raise ValueError(f"bad zstd frame: {exc}") from None
            if declared not in (n, -1):
                raise ValueError("plane declares the wrong length")
            raw = d.decompress(payload, max_output_size=n)
            if len(raw) != n:
                raise ValueError("plane decodes to the wrong length")
            src = np.frombuffer(raw, dtype=np.uint8)
        else:
            if size != n:
                raise ValueError("raw plane has the wrong length")
            src = np.frombuffer(payload, dtype=np.uint8)
        if itemsize == 1:
            out[:n] = src
        else:
            out[k::itemsize] = src
    if pos != len(body):
        raise ValueError("trailing bytes after planes")
