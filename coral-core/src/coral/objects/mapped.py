"""Mapped loads: tensors stored as raw chunks come back mapped from the chunk files, still verified.

The array's pages are the page cache's own (no copy in this process's memory; a write to the array copies
the page, never reaching the file). Every mapped chunk is BLAKE3-checked, and checked against the store's
own seal when it keeps one, before ``map_tensors`` returns. Chunks that are not raw are decoded into their
place; tensors that cannot be mapped at all are read as usual.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..codecs import CODEC_RAW, parse_header
from ..codecs.chunk import HEADER_SIZE, ID_BYTES, ChunkHeader
from ..core.dtypes import dtype_from_name
from ..errors import CoralError, CorruptObjectError
from ..store.base import Store
from . import mapping
from .manifest import CHUNK_BYTES, TensorEntry, chunk_key, hash_bytes
from .pool import IOPool, wait_all
from .reader import EMPTY, TensorReader, naming_tensor, open_chunk_file

log = logging.getLogger(__name__)

MAP_MIN = 256 * 1024  # smaller tensors are read even when mapping is asked for: a mapping saves them nothing
_FALLBACK_HEAD = ChunkHeader(-1, 1, 0, 0, 0, None)  # placeholder until a chunk's header is read


class MappedLoader:
    """``map_tensors`` over ``store``: maps what it can, hands the rest to ``reader``; checks run on ``pool``."""

    def __init__(self, store: Store, pool: IOPool, reader: TensorReader) -> None:
        self.store = store
        self.pool = pool
        self.reader = reader

    def map_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """``read_tensors``, but a tensor stored as raw chunks comes back mapped from the chunk files.

        Its array's pages are the page cache's own (no copy in this process's memory; a write to the
        array copies the page, never reaching the file). Every mapped chunk is BLAKE3-checked before this
        returns, like every read. Chunks that are not raw (older, repacked checkpoints) are decoded into
        their place; tensors with no raw chunk, small ones and packed ones are read as usual. Where mapping
        is not available (not Linux, or a store without files) it is ``read_tensors``.
        """
        items = list(items)
        if not mapping.available():
            return self.reader.read_tensors(items)
        outs: dict[str, np.ndarray] = {name: EMPTY for name, _ in items}  # keeps the tree's order
        rest: list[tuple[str, TensorEntry]] = []
        futures: list[cf.Future[None]] = []
        try:
            for name, entry in items:
                mapped = None
                if not entry.packed and entry.nbytes >= MAP_MIN:
                    mapped = self._map_tensor(name, entry, futures)
                if mapped is None:
                    rest.append((name, entry))
                else:
                    outs[name] = mapped
            outs.update(self.reader.read_tensors(rest))
        except BaseException:
            cf.wait(futures)
            raise
        wait_all(futures)
        return outs

    def _map_tensor(self, name: str, entry: TensorEntry, futures: list[cf.Future[None]]) -> np.ndarray | None:
        """Map one tensor's raw chunks into one array (None when none can be mapped); the checks and the
        decoding of unmappable chunks are queued on ``futures``."""
        heads: list[tuple[str, int, ChunkHeader, int]] = []  # (id, fd, header, payload size)
        region: mapping.Region | None = None
        try:
            for cid in entry.chunks:
                key = chunk_key(cid)
                fd = open_chunk_file(self.store, cid, name)
                if fd is None:
                    return None
                heads.append((cid, fd, _FALLBACK_HEAD, 0))
                try:
                    head = parse_header(os.pread(fd, HEADER_SIZE + ID_BYTES, 0))
                except ValueError as exc:
                    raise CorruptObjectError(cid, f"cannot decode: {exc}", name) from None
                heads[-1] = (cid, fd, head, self.store.size(key))
            nbytes = entry.nbytes
            spans = [(i * CHUNK_BYTES, min(CHUNK_BYTES, nbytes - i * CHUNK_BYTES)) for i in range(len(heads))]

            def mappable(head: ChunkHeader, size: int, length: int, page_aligned: bool) -> bool:
                return (
                    head.codec == CODEC_RAW
                    and head.length == length
                    and size == head.body + head.length
                    and (head.body % mapping.PAGE == 0 or not page_aligned)
                )

            if len(heads) == 1 and mappable(heads[0][2], heads[0][3], nbytes, False):
                _cid, fd, head, _size = heads[0]  # one chunk: map the file from its start, the body at its offset
                region = mapping.Region(nbytes, lead=head.body)
                region.map_file(0, fd, 0, head.body + head.length)
                ok = [True]
            else:
                ok = [
                    mappable(head, size, span[1], True)
                    for (_cid, _fd, head, size), span in zip(heads, spans, strict=True)
                ]
                if not any(ok):
                    return None  # nothing to map: a plain read is faster
                region = mapping.Region(nbytes)
                for mapped, (_cid, fd, head, _size), (at, length) in zip(ok, heads, spans, strict=True):
                    if mapped:
                        region.map_file(at, fd, head.body, length)
                    else:
                        region.map_anonymous(at, length)
            # what the store's own integrity record covers besides the body: the header (and its padding)
            try:
                seals = [
                    (os.pread(fd, head.body, 0), self.store.payload_check(chunk_key(cid), fd)) if mapped else None
                    for mapped, (cid, fd, head, _size) in zip(ok, heads, strict=True)
                ]
            except CorruptObjectError as exc:
                raise naming_tensor(exc, name) from None
        except OSError as exc:
            if isinstance(exc, CoralError):
                raise
            if region is not None:
                region.release()
            log.debug("mapping %s failed (%s): reading it instead", name, exc)
            return None
        except BaseException:
            if region is not None:
                region.release()
            raise
        finally:
            for _cid, fd, _head, _size in heads:
                os.close(fd)
        flat = region.array()
        for (cid, _fd, _head, _size), seal, (at, length) in zip(heads, seals, spans, strict=True):
            view = flat[at : at + length]
            if seal is not None:
                futures.append(self.pool.submit(_check_mapped, cid, view, name, *seal))
            else:
                futures.append(self.pool.submit(self.reader.read_into, cid, view, name))
        return flat.view(dtype_from_name(entry.dtype)).reshape(entry.shape)


def _check_mapped(chunk_id: str, view: np.ndarray, tensor: str, prefix: bytes, check: Any) -> None:
    """A mapped chunk's checks: BLAKE3 of its body, and the store's seal over header + body when it keeps one."""
    if hash_bytes(view.data) != chunk_id:
        raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
    if check is not None:
        try:
            check([prefix, view.data])
        except CorruptObjectError as exc:
            raise naming_tensor(exc, tensor) from None
