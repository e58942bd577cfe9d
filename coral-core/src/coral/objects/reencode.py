"""Re-encoding for repack: a stored chunk rewritten smaller (as a delta, or compressed), same id, same bytes.

A chunk's id is the hash of its decoded bytes, so replacing its object never changes a commit; every new
encoding is decoded and hash-checked before it replaces the old one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..codecs import CODEC_RAW, decode_chunk, encode_chunk, encode_delta, parse_header
from ..codecs.chunk import ChunkHeader
from ..codecs.planes import SAMPLE_BYTES, plane_estimates
from ..core.dtypes import dtype_from_name, is_float
from ..errors import CorruptObjectError
from ..store.base import Store
from .manifest import chunk_key, hash_bytes
from .reader import TensorReader

MAX_DELTA_DEPTH = 16  # bases a load may walk; repack keeps every chain within it


class Reencoder:
    """Rewrites chunks of ``store`` smaller; reads (and verifies) through ``reader``."""

    def __init__(self, store: Store, reader: TensorReader, *, compress: bool = True, level: int = 1) -> None:
        self.store = store
        self.reader = reader
        self.compress = compress
        self.level = level

    def chain(self, chunk_id: str) -> Iterator[str]:
        """Yield the chunk's delta bases, nearest first."""
        seen = {chunk_id}
        cur = self.reader.header(chunk_id).base
        while cur is not None:
            if cur in seen:
                raise CorruptObjectError(chunk_id, "cyclic delta chain")
            seen.add(cur)
            yield cur
            cur = self.reader.header(cur).base

    def reencode_delta(self, chunk_id: str, base_id: str | None, dtype: str, *, height: int = 0) -> int:
        """Re-encode a chunk smaller: as a delta against ``base_id``, or (when it is raw) as planes+zstd.

        Returns bytes saved (0 when nothing pays 3%). The object keeps its id (the hash of its decoded
        bytes), so commits are untouched; the new encoding is decoded and hash-checked before it replaces
        the old. A base whose chain already contains this chunk is not used; ``base_id=None`` only
        compresses. A keyframe is preferred unless the delta is 2% smaller. ``height`` is how many older
        deltas already chain through this chunk; a delta's header records ``height + 1`` (its ``depth``),
        which is how ``Repository.repack`` keeps chains within ``MAX_DELTA_DEPTH``.
        """
        if chunk_id == base_id:
            return 0
        base_head: ChunkHeader | None = None
        if base_id is not None:
            base_head = self.reader.header(base_id)
            if chunk_id in set(self.chain(base_id)):
                base_id = base_head = None
        old = self.reader.read_raw(chunk_id)
        try:
            old_head = parse_header(old)
        except ValueError as exc:
            raise CorruptObjectError(chunk_id, f"cannot decode: {exc}") from None
        was_raw = old_head.codec == CODEC_RAW
        if base_id is None and (not was_raw or not self.compress):
            return 0
        if was_raw and len(old) == old_head.body + old_head.length:
            data = np.frombuffer(old, dtype=np.uint8, offset=old_head.body)  # no copy
            if hash_bytes(data.data) != chunk_id:
                raise CorruptObjectError(chunk_id, "content does not match its hash")
        else:
            data = self.reader.read_chunk(chunk_id)
        itemsize = dtype_from_name(dtype).itemsize
        delta: bytes | None = None
        base: np.ndarray | None = None
        if base_id is not None and base_head is not None:
            base = self.reader.read_chunk(base_id)
            if base.nbytes == data.nbytes:
                delta = encode_delta(
                    data.data, base.data, base_id, height, itemsize, is_float=is_float(dtype)
                )
        key: bytes | None = None
        if was_raw and self.compress:
            # skip the full keyframe encode when samples say it cannot come near the delta
            if delta is not None and data.nbytes > 4 * SAMPLE_BYTES:
                lanes = 8 if itemsize == 16 else itemsize
                est = sum(min(e, 1.0) for e in plane_estimates(data.data, lanes, self.level)) / lanes
                if est * data.nbytes > 1.1 * len(delta):
                    est = -1.0
            else:
                est = 0.0
            if est >= 0.0:
                key = encode_chunk(data.data, itemsize, level=self.level, compress=True)
        if key is not None and (delta is None or len(delta) * 1.02 >= len(key)):
            blob, base = key, None
        elif delta is not None:
            blob = delta
        else:
            return 0
        if len(blob) >= 0.97 * len(old):
            return 0
        # the decoded content is unchanged, so replacing the object keeps every reference valid
        check = decode_chunk(blob, (lambda _b: base) if base is not None else None)
        if hash_bytes(check.data) != chunk_id:
            raise CorruptObjectError(chunk_id, "re-encoding did not round-trip")
        self.store.put(chunk_key(chunk_id), blob, overwrite=True)
        return len(old) - len(blob)
