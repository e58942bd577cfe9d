"""The encoded-chunk format: a fixed header, an optional base id, then the codec's body.

Header (32 bytes, little-endian): magic ``CRLC``, version, codec, element size, delta depth, decoded length
(u64), plane mask (u32), body offset (u32; 0: the body follows the header), 8 reserved bytes. Delta chunks
follow it with the 32-byte base id. A raw chunk of a tensor that spans several chunks starts its body at
``PAGE_ALIGN`` (zero padding between), so the chunks of a tensor can be mapped side by side into one array.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import delta as _delta
from .planes import PLANE_PAYS, compressor, decode_planes, encode_planes, entropy_estimates

MAGIC = b"CRLC"
VERSION = 1
CODEC_RAW = 0
CODEC_PLANES = 1
CODEC_DELTA_XOR = 2
CODEC_DELTA_SUB = 3
CODEC_NAMES = {
    CODEC_RAW: "raw",
    CODEC_PLANES: "planes+zstd",
    CODEC_DELTA_XOR: "delta-xor",
    CODEC_DELTA_SUB: "delta-sub",
}
_HEADER = struct.Struct("<4sBBBBQII8x")
HEADER_SIZE = _HEADER.size
ID_BYTES = 32
PAGE_ALIGN = 4096  # where a page-aligned raw body starts (4 KiB: 0.1% of a full chunk)


@dataclass(frozen=True)
class ChunkHeader:
    codec: int
    itemsize: int
    depth: int
    length: int
    mask: int
    base: str | None  # hex id of the delta base
    offset: int = 0  # where the body starts when not right after the header (page-aligned raw bodies)

    @property
    def size(self) -> int:
        return HEADER_SIZE + (ID_BYTES if self.base else 0)

    @property
    def body(self) -> int:
        """Byte offset of the body in the object."""
        return self.offset or self.size


def _pack(codec: int, itemsize: int, depth: int, length: int, mask: int, base: str | None, offset: int = 0) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, codec, itemsize, depth, length, mask, offset)
    return head + (bytes.fromhex(base) if base else b"")


def parse_header(blob: bytes | memoryview) -> ChunkHeader:
    """Parse and sanity-check a header; raises ValueError on anything malformed."""
    if len(blob) < HEADER_SIZE:
        raise ValueError("object shorter than a chunk header")
    magic, version, codec, itemsize, depth, length, mask, offset = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a Coral chunk (bad magic or version)")
    if codec not in CODEC_NAMES or itemsize not in (1, 2, 4, 8, 16) or length % itemsize:
        raise ValueError("bad chunk header fields")
    if offset and (codec != CODEC_RAW or offset != PAGE_ALIGN):
        raise ValueError(f"bad body offset {offset}")
    base = None
    if codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB):
        if len(blob) < HEADER_SIZE + ID_BYTES:
            raise ValueError("truncated delta header")
        base = bytes(blob[HEADER_SIZE : HEADER_SIZE + ID_BYTES]).hex()
    return ChunkHeader(codec, itemsize, depth, length, mask, base, offset)


def _plane_size(itemsize: int) -> int:
    # complex128 is split on 8-byte lanes by the delta codec; planes work on any element size
    return itemsize


def encode_chunk(
    data: memoryview | bytes, itemsize: int, *, level: int = 1, compress: bool = True, min_saving: float = 0.0
) -> bytes:
    """Encode without a base: planes+zstd when it is smaller, else raw.

    ``min_saving`` (0..1) keeps a chunk raw unless per-plane samples promise at least that fraction saved:
    the save path uses it to spend zstd time only where it pays a lot (raw chunks load fastest).
    """
    parts = encode_chunk_parts(data, itemsize, level=level, compress=compress, min_saving=min_saving)
    # bytes() of a bytes object is that object (the single planes+zstd part comes back uncopied)
    return bytes(parts[0]) if len(parts) == 1 else b"".join(bytes(p) for p in parts)


_RAW_PROBE = 64 * 1024


def encode_chunk_parts(
    data: memoryview | bytes,
    itemsize: int,
    *,
    level: int = 1,
    compress: bool = True,
    min_saving: float = 0.0,
    aligned: bool = False,
) -> list[bytes | memoryview]:
    """``encode_chunk`` as parts to write in order: a raw chunk is ``[header, data]``, so it is never copied
    (``aligned``: a raw body starts at ``PAGE_ALIGN``, see ``raw_header``)."""
    length = len(data)
    if compress and length >= 64:
        estimates = None
        if min_saving > 0.0:
            # first a zstd pass over a raw sample (releases the GIL): bytes that do not shrink by a tenth
            # as they are will not shrink by half as planes either (typical float weights end here)
            if length > 2 * _RAW_PROBE:
                probe = compressor(level).compress(memoryview(data)[:_RAW_PROBE])
                if len(probe) > 0.9 * _RAW_PROBE:
                    return [raw_header(itemsize, length, aligned=aligned), data]
            # then a histogram of a small sample tells "saves half" from "saves a sixth"
            estimates = entropy_estimates(data, _plane_size(itemsize), give_up_above=1.0 - min_saving)
            kept = sum(e if e < PLANE_PAYS else 1.0 for e in estimates) / len(estimates)
            if kept > 1.0 - min_saving:
                return [raw_header(itemsize, length, aligned=aligned), data]
        mask, body = encode_planes(data, _plane_size(itemsize), level, estimates=estimates)
        if mask and len(body) < length:
            return [_pack(CODEC_PLANES, itemsize, 0, length, mask, None) + body]
    return [raw_header(itemsize, length, aligned=aligned), data]


def raw_header(itemsize: int, length: int, *, aligned: bool = False) -> bytes:
    """The header of a raw chunk; the body is the data itself (lets callers write it without a copy).

    ``aligned``: pad the header with zeros to ``PAGE_ALIGN`` bytes, so the body can be memory-mapped at a
    page boundary (used for the chunks of tensors that span several chunks)."""
    if aligned:
        return _pack(CODEC_RAW, itemsize, 0, length, 0, None, PAGE_ALIGN).ljust(PAGE_ALIGN, b"\0")
    return _pack(CODEC_RAW, itemsize, 0, length, 0, None)


_DELTA_SAMPLE = 64 * 1024  # elements used to choose between XOR and subtraction


def _delta_candidates(data: memoryview | bytes, base: memoryview | bytes, itemsize: int, is_float: bool) -> list[int]:
    """Delta codecs worth trying, best guess first: both for floats (chosen on a sample), SUB for integers."""
    if not is_float:
        return [CODEC_DELTA_SUB, CODEC_DELTA_XOR]
    lanes = 8 if itemsize == 16 else itemsize
    n = len(data) // itemsize
    if n <= 4 * _DELTA_SAMPLE:
        return [CODEC_DELTA_SUB, CODEC_DELTA_XOR]
    m = _DELTA_SAMPLE * itemsize
    a, b = memoryview(data)[:m], memoryview(base)[:m]
    sizes = {}
    for codec, fn in ((CODEC_DELTA_SUB, _delta.sub_residual), (CODEC_DELTA_XOR, _delta.xor_residual)):
        _mask, body = encode_planes(fn(a, b, itemsize).data.cast("B"), lanes, 1, sample=False)
        sizes[codec] = len(body)
    return [min(sizes, key=lambda c: sizes[c])]


def encode_delta(
    data: memoryview | bytes,
    base: memoryview | bytes,
    base_id: str,
    base_depth: int,
    itemsize: int,
    *,
    is_float: bool,
    level: int = 1,
) -> bytes:
    """Encode ``data`` as the smaller of its XOR and integer-difference residuals against ``base``.

    Integer difference (zig-zag) usually wins on float weights and Adam moments too (a small change of a
    float is a small change of its bit pattern); for big float chunks the choice is made on a sample.
    """
    if len(base) != len(data):
        raise ValueError("delta base has a different length")
    lanes = 8 if itemsize == 16 else itemsize
    best: bytes | None = None
    for codec in _delta_candidates(data, base, itemsize, is_float):
        fn = _delta.sub_residual if codec == CODEC_DELTA_SUB else _delta.xor_residual
        residual = fn(data, base, itemsize)
        mask, body = encode_planes(residual.data.cast("B"), lanes, level, sample=False)
        blob = _pack(codec, itemsize, base_depth + 1, len(data), mask, base_id) + body
        if best is None or len(blob) < len(best):
            best = blob
    assert best is not None
    return best


def decode_chunk(
    blob: bytes | memoryview,
    get_base: Callable[[str], np.ndarray] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode an encoded chunk to a uint8 array; ``get_base(id)`` supplies decoded delta bases.

    ``out`` (uint8, the decoded length) receives the bytes when given, saving a copy.
    """
    head = parse_header(blob)
    body = memoryview(blob)[head.body :]
    if out is None:
        out = np.empty(head.length, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.size != head.length:
        raise ValueError("output buffer has the wrong size")
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
