"""A bounded LRU of decoded chunks: delta bases and pack chunks, which the next read is likely to need."""

from __future__ import annotations

import collections
import threading

import numpy as np

CACHE_BYTES = 64 * 1024 * 1024


class ChunkCache:
    """Decoded chunks by id, least recently used dropped first once over ``limit`` bytes; thread-safe."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self._items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0

    def get(self, chunk_id: str) -> np.ndarray | None:
        """The cached bytes of ``chunk_id`` (marked recently used), or None."""
        with self._lock:
            hit = self._items.get(chunk_id)
            if hit is not None:
                self._items.move_to_end(chunk_id)
            return hit

    def put(self, chunk_id: str, data: np.ndarray) -> None:
        """Keep ``data`` (not copied) unless already cached; evicts the oldest entries over the limit."""
        with self._lock:
            if chunk_id in self._items:
                return
            self._items[chunk_id] = data
            self._bytes += data.nbytes
            while self._bytes > self.limit and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def drop(self, chunk_id: str) -> None:
        """Forget one chunk (so the next read goes to the store)."""
        with self._lock:
            old = self._items.pop(chunk_id, None)
            if old is not None:
                self._bytes -= old.nbytes

    def clear(self) -> None:
        """Forget every chunk (after a gc or repack changed what the store holds)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
