"""Exact chunk codecs: raw, byte planes + zstd, and XOR / integer deltas against a base chunk.

Codecs know nothing of files or tensors: they turn bytes (with an element size) into an encoded object
and back. The object's id is the hash of the decoded bytes, so re-encoding never changes an id.
"""

from .chunk import (
    CODEC_DELTA_SUB,
    CODEC_DELTA_XOR,
    CODEC_PLANES,
    CODEC_RAW,
    ChunkHeader,
    decode_chunk,
    encode_chunk,
    encode_chunk_parts,
    encode_delta,
    parse_header,
    raw_header,
)

__all__ = [
    "CODEC_DELTA_SUB",
    "CODEC_DELTA_XOR",
    "CODEC_PLANES",
    "CODEC_RAW",
    "ChunkHeader",
    "decode_chunk",
    "encode_chunk",
    "encode_chunk_parts",
    "encode_delta",
    "parse_header",
    "raw_header",
]
