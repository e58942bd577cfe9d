"""The write path: tensors in, content-addressed chunks out, hashed and written through the shared pool.

Saves write raw chunks unless a sample promises a big saving (raw is the fastest to write and to load);
``Reencoder`` (run by repack) compresses older chunks later. A fingerprint per (tensor name, chunk index)
-- xxh3-128 of every byte -- lets a save skip BLAKE3 and the write for chunks that did not change since
the last save through this store. It is taken only for chunks whose first bytes were unchanged since
their last write: a training checkpoint changes nearly every chunk at every save, and those pay BLAKE3
(their id) and the write, nothing more; a frozen chunk pays BLAKE3 once more, then is skipped. At most a
pool's worth of chunks is in flight, so memory stays near one copy of the data plus a bounded buffer.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from ..codecs import encode_chunk_parts
from ..codecs.chunk import raw_header
from ..core.dtypes import dtype_name
from ..errors import InvalidArgumentError
from ..store.base import PendingPut, Store
from .manifest import CHUNK_BYTES, PACK_MAX, TensorEntry, chunk_key, hash_bytes
from .pool import IOPool

WRITE_MIN_SAVING = 0.5  # a save compresses a chunk only when samples promise at least this fraction saved
MAX_FINGERPRINTS = 1 << 20  # change-check entries kept (one per chunk position)
MAX_PUBLISHING = 64  # written objects waiting for their fsync + rename in the pool (each holds a file open)
PROBE_BYTES = 64  # leading bytes kept per entry: a mismatch there sends a chunk to be written first


class PendingWrites:
    """Objects a save has written whose fsync + rename are still running; ``wait()`` makes them durable."""

    def __init__(self, futures: list[cf.Future[bool]]) -> None:
        self._futures = futures

    def wait(self) -> None:
        """Block until every object is durable and visible; re-raise the first failure (after all ended)."""
        futures, self._futures = self._futures, []
        cf.wait(futures)
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                raise exc


@dataclass
class _Pack:
    """Small tensors of one dtype being concatenated into a pack chunk."""

    itemsize: int
    buf: bytearray = field(default_factory=bytearray)
    members: list[str] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # digest -> where those bytes are


class TensorWriter:
    """Writes tensors as chunks into ``store``, in parallel on ``pool``, remembering what it last wrote."""

    def __init__(
        self,
        store: Store,
        pool: IOPool,
        *,
        compress: bool = True,
        level: int = 1,
        write_min_saving: float = WRITE_MIN_SAVING,
        max_publishing: int | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.compress = compress
        self.level = level
        self.write_min_saving = write_min_saving
        # (tensor name, chunk index) -> (xxh3-128, id, first bytes) of its last write: unchanged chunks skip BLAKE3
        # ... and whether that write stayed raw (compression did not pay), so the next skips the sampling;
        # the xxh3 is None when that write's first bytes had changed (not taken: the chunk was changing)
        self._fingerprints: dict[tuple[str, int], tuple[bytes | None, str, bytes, bool]] = {}
        self._fp_lock = threading.Lock()
        self._publish_slots = threading.Semaphore(max_publishing or MAX_PUBLISHING)

    def forget_fingerprints(self) -> None:
        """Drop the change-check cache (the next save hashes every chunk again)."""
        with self._fp_lock:
            self._fingerprints.clear()

    def _known(self, name: str, idx: int, view: memoryview) -> tuple[bytes, str | None]:
        """(xxh3-128 of the chunk, its id when this chunk of this tensor was last written with these bytes)."""
        fp = xxhash.xxh3_128_digest(view)
        with self._fp_lock:
            hit = self._fingerprints.get((name, idx))
        if hit is not None and hit[0] is not None and hit[0] == fp and self.store.has(chunk_key(hit[1])):
            return fp, hit[1]
        return fp, None

    def _probe_matches(self, name: str, idx: int, view: memoryview) -> bool:
        """True when this chunk's first bytes equal those of its last write (cheap hint, never trusted)."""
        with self._fp_lock:
            hit = self._fingerprints.get((name, idx))
        return hit is not None and hit[2] == bytes(view[:PROBE_BYTES])

    def _write_chunk(
        self,
        name: str,
        idx: int,
        view: memoryview,
        itemsize: int,
        claimed: set[str],
        lock: threading.Lock,
        fp: bytes | None = None,
        aligned: bool = False,
    ) -> tuple[str, int, cf.Future[bool] | None]:
        """Hash the chunk and copy it into a new object; returns (id, bytes written, its pending publish).

        ``fp`` is the chunk's xxh3 when the caller took it (its first bytes matched its last write), else
        None: a changed chunk is not fingerprinted. The publish (fsync, rename) is handed to the pool, so the
        caller's next work -- and its commit object -- overlap the disk flush; ``write_tensors`` waits for it
        before it returns."""
        slot = (name, idx)
        with self._fp_lock:
            last = self._fingerprints.get(slot)
        cid = hash_bytes(view)
        written = 0
        publish: cf.Future[bool] | None = None
        with lock:  # the same bytes twice in one save are written once
            fresh = cid not in claimed
            claimed.add(cid)
        key = chunk_key(cid)
        stayed_raw = last is not None and last[3]
        if fresh and not self.store.has(key):
            if stayed_raw:  # its last version did not pay to compress: skip the sampling (repack may still)
                parts: list[bytes | memoryview] = [raw_header(itemsize, len(view), aligned=aligned), view]
            else:
                parts = encode_chunk_parts(
                    view, itemsize, level=self.level, compress=self.compress, min_saving=self.write_min_saving,
                    aligned=aligned,
                )
            publish = self._publish(self.store.begin_put_parts(key, parts))
            written = sum(len(p) for p in parts)
            stayed_raw = len(parts) == 2  # [header, the data itself]
        if fp is None or xxhash.xxh3_128_digest(view) == fp:  # unchanged while it was hashed: safe to remember
            with self._fp_lock:
                if len(self._fingerprints) > MAX_FINGERPRINTS:
                    self._fingerprints.clear()
                self._fingerprints[slot] = (fp, cid, bytes(view[:PROBE_BYTES]), stayed_raw)
        return cid, written, publish

    def _publish(self, pending: PendingPut) -> cf.Future[bool]:
        """Run ``pending.finish()`` in the pool; inline when too many are queued (each holds an open file)."""
        if not self._publish_slots.acquire(blocking=False):
            done: cf.Future[bool] = cf.Future()
            try:
                done.set_result(pending.finish())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter, like a pool task's error
                done.set_exception(exc)
            return done

        def run() -> bool:
            try:
                return pending.finish()
            finally:
                self._publish_slots.release()

        try:
            return self.pool.submit(run)
        except BaseException:
            self._publish_slots.release()
            pending.abort()
            raise

    def write_tensors_deferred(
        self, items: Iterable[tuple[str, np.ndarray]]
    ) -> tuple[dict[str, TensorEntry], int, PendingWrites]:
        """Store every (name, array); returns the entries, the bytes newly written, and the pending publishes.

        When it returns, every byte has been copied out of the arrays (they may change) and every id is
        known; the objects become durable and visible once ``PendingWrites.wait()`` returns -- a commit
        waits for that before its ref moves, and meanwhile writes its own object.

        Chunks are handled in parallel. A chunk whose bytes equal the last write of the same chunk of the
        same tensor name through this store (an xxh3-128 check of every byte, ~30 GB/s) reuses that write's
        id; every other chunk is BLAKE3-hashed and written unless already stored. Chunks whose first bytes
        changed go to the pool at once; the checks of the probably-unchanged rest run after their copies,
        so a save that changed little starts its disk flush first. Tensors of up to ``PACK_MAX`` bytes
        (biases, norms, scalars) are concatenated per dtype into shared pack chunks: one file instead of
        hundreds, and unchanged packs dedup like any chunk. Arrays must not change during the call.
        """
        entries: dict[str, TensorEntry | None] = {}
        pending: collections.deque[tuple[list[tuple[str, int]], cf.Future[tuple[str, int, Any]]]] = (
            collections.deque()
        )
        publishing: list[cf.Future[bool]] = []
        claimed: set[str] = set()
        claim_lock = threading.Lock()
        written = 0
        limit = 4 * self.pool.threads  # chunks in flight: raw ones hold only a view, encoded ones <= 4 MiB each

        def drain(until: int) -> None:
            nonlocal written
            while len(pending) > until:
                targets, fut = pending.popleft()
                cid, n, publish = fut.result()
                for name, idx in targets:
                    entries[name].chunks[idx] = cid  # type: ignore[union-attr]
                written += n
                if publish is not None:
                    publishing.append(publish)

        def submit(
            slot: tuple[str, int], targets: list[tuple[str, int]], part: memoryview, itemsize: int,
            fp: bytes | None = None, aligned: bool = False,
        ) -> None:
            fut = self.pool.submit(
                self._write_chunk, slot[0], slot[1], part, itemsize, claimed, claim_lock, fp, aligned
            )
            pending.append((targets, fut))
            drain(limit)

        later: list[tuple[str, int, memoryview, int, bool]] = []
        small: list[tuple[str, np.ndarray]] = []
        try:
            for name, array in items:
                arr = as_storable(name, array)
                nbytes = arr.nbytes
                if 0 < nbytes <= PACK_MAX:
                    entries[name] = None  # packed below, after the big chunks are under way
                    small.append((name, arr))
                    continue
                nchunks = -(-nbytes // CHUNK_BYTES) if nbytes else 0
                entries[name] = TensorEntry(dtype_name(arr.dtype), tuple(arr.shape), [""] * nchunks)
                if not nbytes:
                    continue
                view = arr.reshape(-1).view(np.uint8).data
                aligned = nchunks > 1  # raw bodies at page boundaries: the chunks can be mapped side by side
                for i in range(nchunks):
                    part = view[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
                    if self._probe_matches(name, i, part):
                        later.append((name, i, part, arr.dtype.itemsize, aligned))  # probably unchanged: check after
                        continue
                    submit((name, i), [(name, i)], part, arr.dtype.itemsize, None, aligned)
            # the changed chunks are copied out before this thread hashes packs and runs its xxh3 passes:
            # those hold the GIL, and the pool's threads would wait a switch interval (5 ms) to go on
            drain(0)
            for slot, members, buf, itemsize in _packs(small, entries):
                packed, fp = memoryview(buf), None
                if self._probe_matches(slot[0], slot[1], packed):  # probably the same pack as last time
                    fp, known = self._known(slot[0], slot[1], packed)
                    if known is not None:
                        for n in members:
                            entries[n].chunks[0] = known  # type: ignore[union-attr]
                        continue
                submit(slot, [(n, 0) for n in members], packed, itemsize, fp)
            for name, i, part, itemsize, aligned in later:
                fp, known = self._known(name, i, part)
                if known is not None:
                    entries[name].chunks[i] = known  # type: ignore[union-attr]
                else:
                    submit((name, i), [(name, i)], part, itemsize, fp, aligned)
            drain(0)
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            cf.wait([f for _, f in pending])  # nothing may still write once the caller sees the error
            for _, fut in pending:
                if not fut.cancelled() and fut.exception() is None:
                    publish = fut.result()[2]
                    if publish is not None:
                        publishing.append(publish)
            cf.wait(publishing)
            raise
        return entries, written, PendingWrites(publishing)  # type: ignore[return-value]


def _packs(
    small: list[tuple[str, np.ndarray]], entries: dict[str, TensorEntry | None]
) -> Iterator[tuple[tuple[str, int], list[str], bytearray, int]]:
    """Concatenate small tensors per dtype into pack buffers (<= CHUNK_BYTES each); fills their entries.

    Members are taken in name order. Yields (change-check slot, member names, bytes, itemsize) per pack.
    A pack's slot has a negative
    index, which never names a real chunk, so its change check is its own."""
    packs: dict[str, _Pack] = {}
    done: dict[str, int] = {}

    def flush(dt: str) -> tuple[tuple[str, int], list[str], bytearray, int]:
        pack = packs.pop(dt)
        k = done[dt] = done.get(dt, 0) + 1
        return (f"pack:{dt}", -k), pack.members, pack.buf, pack.itemsize

    # by name, not arrival order: the same tensors make the same packs however they were handed in, so an
    # export/import round trip (or a save in another order) stores no new pack
    for name, arr in sorted(small, key=lambda item: item[0]):
        dt = dtype_name(arr.dtype)
        raw = arr.reshape(-1).view(np.uint8).data
        pack = packs.get(dt)
        if pack is not None and len(pack.buf) + arr.nbytes > CHUNK_BYTES:
            yield flush(dt)
            pack = None
        if pack is None:
            pack = packs[dt] = _Pack(arr.dtype.itemsize)
        digest = hash_bytes(raw)
        offset = pack.offsets.get(digest)  # the same bytes twice in one pack are kept once
        if offset is None:
            offset = pack.offsets[digest] = len(pack.buf)
            pack.buf += raw
        entries[name] = TensorEntry(dt, tuple(arr.shape), [""], offset=offset, digest=digest)
        pack.members.append(name)
    for dt in list(packs):
        yield flush(dt)


def as_storable(name: str, array: Any) -> np.ndarray:
    """``array`` as a little-endian, C-contiguous numpy array of a supported dtype; refuses anything else."""
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"weights[{name!r}]", type(array).__name__, "expected a numpy array")
    dtype_name(array.dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array
