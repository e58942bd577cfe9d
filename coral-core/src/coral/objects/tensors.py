"""``ObjectStore``: the object layer's front. Tensors in, content-addressed chunks out, and back, verified.

It wires one shared thread pool (``pool``) and one chunk cache (``cache``) to the jobs, each in its own
module: the manifest format (``manifest``), the write path (``writer``), the read path (``reader``),
mapped loads (``mapped``) and repack's re-encoding (``reencode``). The names other code imported from
this module before the split are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

from ..codecs.chunk import ChunkHeader
from ..store.base import Store
from .cache import ChunkCache
from .manifest import CHUNK_BYTES, MAX_ELEMENTS, PACK_MAX, TensorEntry, chunk_key, hash_bytes, pack_bytes
from .mapped import MappedLoader
from .pool import IOPool
from .reader import TensorReader
from .reencode import MAX_DELTA_DEPTH, Reencoder
from .writer import WRITE_MIN_SAVING, PendingWrites, TensorWriter

__all__ = [
    "CHUNK_BYTES",
    "MAX_DELTA_DEPTH",
    "MAX_ELEMENTS",
    "PACK_MAX",
    "WRITE_MIN_SAVING",
    "ObjectStore",
    "PendingWrites",
    "TensorEntry",
    "chunk_key",
    "hash_bytes",
    "pack_bytes",
]

T = TypeVar("T")
R = TypeVar("R")


class ObjectStore:
    """Chunked, deduplicated, verified tensor storage on top of any :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        workers: int | None = None,
        compress: bool = True,
        level: int = 1,
        write_min_saving: float = WRITE_MIN_SAVING,
        threads: int | None = None,
    ) -> None:
        self.store = store
        self.workers = max(1, workers or os.cpu_count() or 1)
        # more threads than cores: a thread waiting on fsync or a read leaves its core to another
        self.threads = max(1, threads or min(32, max(8, 2 * self.workers)))
        self.compress = compress
        self.level = level
        self.write_min_saving = write_min_saving
        self.pool = IOPool(self.threads)
        self.cache = ChunkCache()
        self.writer = TensorWriter(
            store, self.pool, compress=compress, level=level, write_min_saving=write_min_saving
        )
        # a local disk is read by one thread per core (more fight over the GIL); a remote store, whose requests
        # wait on the network, by every pool thread
        readers = self.threads if store.ranged_reads else self.workers
        self.reader = TensorReader(store, self.pool, self.cache, readers=readers)
        self.mapped = MappedLoader(store, self.pool, self.reader)
        self.reencoder = Reencoder(store, self.reader, compress=compress, level=level)

    def close(self) -> None:
        """Finish queued work and stop the pool's threads."""
        self.pool.shutdown()

    # ---- shared machinery ----------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every decoded chunk kept in memory (after gc or repack changed what the store holds)."""
        self.cache.clear()

    def parallel_map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` run on the object layer's thread pool; re-raises the first failure."""
        return self.pool.map(fn, items)

    # ---- writing -------------------------------------------------------------------------------------------
    def forget_fingerprints(self) -> None:
        """Drop the change-check cache (the next save hashes every chunk again)."""
        self.writer.forget_fingerprints()

    def write_tensors(self, items: Iterable[tuple[str, np.ndarray]]) -> tuple[dict[str, TensorEntry], int]:
        """Store every (name, array), durably; returns the entries and the bytes newly written."""
        entries, written, pending = self.writer.write_tensors_deferred(items)
        pending.wait()
        return entries, written

    def write_tensors_deferred(
        self, items: Iterable[tuple[str, np.ndarray]]
    ) -> tuple[dict[str, TensorEntry], int, PendingWrites]:
        """Store every (name, array); returns the entries, the bytes newly written, and the pending publishes
        (durable and visible once ``PendingWrites.wait()`` returns). See ``TensorWriter.write_tensors_deferred``."""
        return self.writer.write_tensors_deferred(items)

    # ---- reading -------------------------------------------------------------------------------------------
    def read_raw(self, chunk_id: str) -> bytes:
        """A chunk object's stored bytes (encoded, not verified against its id)."""
        return self.reader.read_raw(chunk_id)

    def header(self, chunk_id: str) -> ChunkHeader:
        """A chunk's header (codec, lengths, delta base), read without the body."""
        return self.reader.header(chunk_id)

    def read_chunk(self, chunk_id: str, tensor: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded, hash-checked bytes of a chunk (uint8 array), into ``out`` when given."""
        return self.reader.read_chunk(chunk_id, tensor, out)

    def read_tensor(self, name: str, entry: TensorEntry) -> np.ndarray:
        """Assemble a tensor from its chunks (read in parallel, each verified) into one fresh array."""
        return self.reader.read_tensor(name, entry)

    def read_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """Read many tensors at once: every chunk of every tensor goes through the pool together."""
        return self.reader.read_tensors(items)

    def map_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """``read_tensors``, but tensors stored as raw chunks come back mapped from the chunk files (verified);
        see ``MappedLoader.map_tensors``."""
        return self.mapped.map_tensors(items)

    def verify_chunk(self, chunk_id: str) -> None:
        """Raise CorruptObjectError/ObjectNotFoundError unless the chunk decodes to its hash."""
        self.reader.verify_chunk(chunk_id)

    # ---- delta re-encoding (repack) ------------------------------------------------------------------------
    def chain(self, chunk_id: str) -> Iterator[str]:
        """Yield the chunk's delta bases, nearest first."""
        return self.reencoder.chain(chunk_id)

    def reencode_delta(self, chunk_id: str, base_id: str | None, dtype: str, *, height: int = 0) -> int:
        """Re-encode a chunk smaller, keeping its id; returns bytes saved. See ``Reencoder.reencode_delta``."""
        return self.reencoder.reencode_delta(chunk_id, base_id, dtype, height=height)
