"""Write tensors as content-addressed chunks and read them back, verified, through a thread pool.

A chunk's id is the BLAKE3 hash of its decoded bytes; hashing and zstd release the GIL, so a pool of
threads keeps every core busy. At most ``2 x workers`` chunks are in flight, so memory stays near one
copy of the data plus a bounded buffer.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import blake3
import numpy as np

from ..codecs import decode_chunk, encode_chunk, encode_delta, parse_header
from ..codecs.chunk import ChunkHeader
from ..core.dtypes import dtype_from_name, dtype_name, is_float
from ..errors import CorruptObjectError, InvalidArgumentError, ObjectNotFoundError
from ..store.base import Store

CHUNK_BYTES = 4 * 1024 * 1024
MAX_DELTA_DEPTH = 8
MAX_ELEMENTS = 1 << 40  # refuse absurd manifests before allocating


def chunk_key(chunk_id: str) -> str:
    return f"chunks/{chunk_id[:2]}/{chunk_id[2:]}"


def hash_bytes(data: memoryview | bytes) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


@dataclass
class TensorEntry:
    """How one tensor is stored: dtype, shape and its chunk ids in order."""

    dtype: str
    shape: tuple[int, ...]
    chunks: list[str]
    layer_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * dtype_from_name(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "chunks": list(self.chunks)}
        if self.layer_type:
            d["layer_type"] = self.layer_type
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_json(cls, name: str, d: Any) -> "TensorEntry":
        """Parse and validate a manifest entry; absurd shapes and bad ids are refused before allocating."""
        if not isinstance(d, dict):
            raise CorruptObjectError("manifest", "tensor entry is not an object", tensor=name)
        try:
            dtype = str(d["dtype"])
            itemsize = dtype_from_name(dtype).itemsize
            shape = tuple(int(s) for s in d["shape"])
            chunks = [str(c) for c in d["chunks"]]
        except Exception as exc:
            raise CorruptObjectError("manifest", f"bad tensor entry: {exc}", tensor=name) from None
        if any(s < 0 for s in shape) or len(shape) > 64:
            raise CorruptObjectError("manifest", f"invalid shape {shape}", tensor=name)
        n = 1
        for s in shape:
            n *= s
            if n > MAX_ELEMENTS:
                raise CorruptObjectError("manifest", f"absurd shape {shape}", tensor=name)
        expected = -(-n * itemsize // CHUNK_BYTES) if n else 0
        if len(chunks) != expected and not (n == 0 and len(chunks) == 0):
            raise CorruptObjectError("manifest", f"{len(chunks)} chunks for {n * itemsize} bytes", tensor=name)
        for c in chunks:
            if len(c) != 64 or any(ch not in "0123456789abcdef" for ch in c):
                raise CorruptObjectError("manifest", f"bad chunk id {c!r}", tensor=name)
        return cls(dtype, shape, chunks, d.get("layer_type"), dict(d.get("extra") or {}))


class ObjectStore:
    """Chunked, deduplicated, verified tensor storage on top of any :class:`Store`."""

    def __init__(self, store: Store, *, workers: int | None = None, compress: bool = True, level: int = 1) -> None:
        self.store = store
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.compress = compress
        self.level = level
        self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="coral-io")
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_bytes = 0
        self._cache_limit = 64 * 1024 * 1024

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ---- writing ----------------------------------------------------------------------------------------
    def _write_chunk(self, view: memoryview, itemsize: int) -> tuple[str, int]:
        cid = hash_bytes(view)
        key = chunk_key(cid)
        if self.store.has(key):
            return cid, 0
        blob = encode_chunk(view, itemsize, level=self.level, compress=self.compress)
        self.store.put(key, blob)
        return cid, len(blob)

    def write_tensors(self, items: Iterable[tuple[str, np.ndarray]]) -> tuple[dict[str, TensorEntry], int]:
        """Store every (name, array); returns the entries and the bytes newly written."""
        entries: dict[str, TensorEntry] = {}
        pending: collections.deque[tuple[str, int, cf.Future[tuple[str, int]]]] = collections.deque()
        written = 0
        limit = 2 * self.workers

        def drain(until: int) -> None:
            nonlocal written
            while len(pending) > until:
                name, idx, fut = pending.popleft()
                cid, n = fut.result()
                entries[name].chunks[idx] = cid
                written += n

        try:
            for name, array in items:
                arr = _as_storable(name, array)
                dname = dtype_name(arr.dtype)
                nbytes = arr.nbytes
                nchunks = -(-nbytes // CHUNK_BYTES) if nbytes else 0
                entries[name] = TensorEntry(dname, tuple(arr.shape), [""] * nchunks)
                if not nbytes:
                    continue
                view = memoryview(arr.reshape(-1).view(np.uint8))
                for i in range(nchunks):
                    part = view[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
                    pending.append((name, i, self._pool.submit(self._write_chunk, part, arr.dtype.itemsize)))
                    drain(limit)
            drain(0)
        except BaseException:
            for _, _, fut in pending:
                fut.cancel()
            raise
        return entries, written

    # ---- reading ----------------------------------------------------------------------------------------
    def read_raw(self, chunk_id: str) -> bytes:
        return self.store.get(chunk_key(chunk_id))

    def header(self, chunk_id: str) -> ChunkHeader:
        return parse_header(self.store.get_range(chunk_key(chunk_id), 0, 64))

    def read_chunk(self, chunk_id: str, tensor: str | None = None, _depth: int = 0) -> np.ndarray:
        """Decoded, hash-checked bytes of a chunk (uint8 array)."""
        with self._cache_lock:
            hit = self._cache.get(chunk_id)
            if hit is not None:
                self._cache.move_to_end(chunk_id)
                return hit
        if _depth > 2 * MAX_DELTA_DEPTH + 4:
            raise CorruptObjectError(chunk_id, "delta chain too long or cyclic", tensor)
        try:
            blob = self.read_raw(chunk_id)
        except ObjectNotFoundError:
            raise ObjectNotFoundError(
                f"chunk {chunk_id} of tensor {tensor!r} is missing from the store" if tensor else f"chunk {chunk_id} is missing"
            ) from None
        try:
            data = decode_chunk(blob, lambda b: self.read_chunk(b, tensor, _depth + 1))
        except (ValueError, Exception) as exc:
            if isinstance(exc, (CorruptObjectError, ObjectNotFoundError)):
                raise
            raise CorruptObjectError(chunk_id, f"cannot decode: {exc}", tensor) from None
        if hash_bytes(memoryview(data)) != chunk_id:
            raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
        if _depth > 0 or parse_header(blob).base is not None:
            self._remember(chunk_id, data)
        return data

    def _remember(self, chunk_id: str, data: np.ndarray) -> None:
        with self._cache_lock:
            self._cache[chunk_id] = data
            self._cache_bytes += data.nbytes
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes

    def read_tensor(self, name: str, entry: TensorEntry) -> np.ndarray:
        """Assemble a tensor from its chunks (read in parallel, each verified) into one fresh array."""
        dt = dtype_from_name(entry.dtype)
        out = np.empty(entry.shape, dtype=dt)
        flat = out.reshape(-1).view(np.uint8)
        if flat.nbytes != entry.nbytes:
            raise CorruptObjectError("manifest", "size mismatch", name)

        def fill(i: int, cid: str) -> None:
            data = self.read_chunk(cid, name)
            start = i * CHUNK_BYTES
            expect = min(CHUNK_BYTES, flat.nbytes - start)
            if data.nbytes != expect:
                raise CorruptObjectError(cid, f"chunk has {data.nbytes} bytes, expected {expect}", name)
            flat[start : start + expect] = data

        if len(entry.chunks) == 1:
            fill(0, entry.chunks[0])
        else:
            list(self._pool.map(lambda ic: fill(*ic), enumerate(entry.chunks)))
        return out

    def verify_chunk(self, chunk_id: str) -> None:
        """Raise CorruptObjectError/ObjectNotFoundError unless the chunk decodes to its hash."""
        with self._cache_lock:
            self._cache.pop(chunk_id, None)
        self.read_chunk(chunk_id)

    # ---- delta re-encoding (repack) -----------------------------------------------------------------------
    def chain(self, chunk_id: str) -> Iterator[str]:
        """Yield the chunk's delta bases, nearest first."""
        seen = {chunk_id}
        cur = self.header(chunk_id).base
        while cur is not None:
            if cur in seen:
                raise CorruptObjectError(chunk_id, "cyclic delta chain")
            seen.add(cur)
            yield cur
            cur = self.header(cur).base

    def reencode_delta(self, chunk_id: str, base_id: str, dtype: str) -> int:
        """Re-encode a chunk as a delta against ``base_id`` when that is smaller; returns bytes saved.

        The object keeps its id (the hash of its decoded bytes), so commits are untouched. A base whose chain
        already contains this chunk, or is at the depth bound, is refused.
        """
        if chunk_id == base_id:
            return 0
        base_head = self.header(base_id)
        if base_head.depth + 1 > MAX_DELTA_DEPTH:
            return 0
        if chunk_id in set(self.chain(base_id)):
            return 0
        old = self.read_raw(chunk_id)
        data = self.read_chunk(chunk_id)
        base = self.read_chunk(base_id)
        if base.nbytes != data.nbytes:
            return 0
        itemsize = dtype_from_name(dtype).itemsize
        blob = encode_delta(
            memoryview(data), memoryview(base), base_id, base_head.depth, itemsize, is_float=is_float(dtype)
        )
        if len(blob) >= 0.97 * len(old):
            return 0
        # the decoded content is unchanged, so replacing the object keeps every reference valid
        check = decode_chunk(blob, lambda _b: base)
        if hash_bytes(memoryview(check)) != chunk_id:
            raise CorruptObjectError(chunk_id, "delta re-encoding did not round-trip")
        self.store.put(chunk_key(chunk_id), blob, overwrite=True)
        return len(old) - len(blob)


def _as_storable(name: str, array: Any) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"weights[{name!r}]", type(array).__name__, "expected a numpy array")
    dtype_name(array.dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array
