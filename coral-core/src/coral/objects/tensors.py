"""Write tensors as content-addressed chunks and read them back, verified, through a thread pool.

A chunk's id is the BLAKE3 hash of its decoded bytes; hashing, zstd, file I/O and fsync release the GIL,
so a pool of threads keeps every core and the disk busy. At most a pool's worth of chunks is in flight,
so memory stays near one copy of the data plus a bounded buffer.

Saves write raw chunks unless a sample promises a big saving (raw is the fastest to write and to load);
``reencode_delta`` (run by ``Repository.repack``) compresses older chunks later. A fingerprint per
(tensor name, chunk index) -- xxh3-128 of every byte -- lets a save skip BLAKE3 and the write for chunks
that did not change since the last save through this store.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np
import xxhash

from ..codecs import CODEC_RAW, decode_chunk, encode_chunk, encode_chunk_parts, encode_delta, parse_header
from ..codecs.chunk import HEADER_SIZE, ID_BYTES, ChunkHeader, raw_header
from ..codecs.planes import _SAMPLE as _SAMPLE_BYTES
from ..codecs.planes import plane_estimates
from ..core.dtypes import dtype_from_name, dtype_name, is_float
from ..errors import CoralError, CorruptObjectError, InvalidArgumentError, ObjectNotFoundError
from ..store.base import PendingPut, Store
from . import mapping as _mapping

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
MAX_DELTA_DEPTH = 16  # bases a load may walk; repack keeps every chain within it
MAX_ELEMENTS = 1 << 40  # refuse absurd manifests before allocating
WRITE_MIN_SAVING = 0.5  # a save compresses a chunk only when samples promise at least this fraction saved
_MAX_CHAIN_WALK = 4096  # a read refuses longer (corrupt or cyclic) delta chains
_SMALL_READ = 256 * 1024  # chunks up to this size are read whole in one request
_MAP_MIN = 256 * 1024  # smaller tensors are read even when mapping is asked for: a mapping saves them nothing
_MAX_FINGERPRINTS = 1 << 20  # change-check entries kept (one per chunk position)
_MAX_PUBLISHING = 64  # written objects waiting for their fsync + rename in the pool (each holds a file open)
_PROBE = 64  # leading bytes kept per entry: a mismatch there sends a chunk to be written first
# Tensors up to PACK_MAX bytes (biases, norms, scalars) share "pack" chunks, one per dtype and save: a file
# per tensor would cost far more than its bytes. Small enough that a frozen tensor rewritten with a changed
# neighbour costs little (and repack turns the older pack into a near-empty delta).
PACK_MAX = 16 * 1024


_FALLBACK_HEAD = ChunkHeader(-1, 1, 0, 0, 0, None)  # placeholder until a chunk's header is read


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
    offset: int | None = None  # a small tensor's byte offset in the one pack chunk it shares with others
    digest: str | None = None  # BLAKE3 of a packed tensor's own bytes: its identity (the pack id is shared)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * dtype_from_name(self.dtype).itemsize

    @property
    def packed(self) -> bool:
        return self.offset is not None

    @property
    def identity(self) -> tuple[Any, ...]:
        """Equal for two entries exactly when they hold the same tensor (dtype, shape and bytes)."""
        content = ("packed", self.digest) if self.offset is not None else tuple(self.chunks)
        return (self.dtype, tuple(self.shape), content)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "chunks": list(self.chunks)}
        if self.offset is not None:
            d["offset"] = self.offset
            d["digest"] = self.digest
        if self.layer_type:
            d["layer_type"] = self.layer_type
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_json(cls, name: str, d: Any) -> TensorEntry:
        """Parse and validate a manifest entry; absurd shapes and bad ids are refused before allocating."""
        if not isinstance(d, dict):
            raise CorruptObjectError("manifest", "tensor entry is not an object", tensor=name)
        try:
            dtype = str(d["dtype"])
            itemsize = dtype_from_name(dtype).itemsize
            shape = tuple(int(s) for s in d["shape"])
            chunks = [str(c) for c in d["chunks"]]
        except Exception as exc:  # noqa: BLE001 - any malformed entry is a corrupt manifest
            raise CorruptObjectError("manifest", f"bad tensor entry: {exc}", tensor=name) from None
        if any(s < 0 for s in shape) or len(shape) > 64:
            raise CorruptObjectError("manifest", f"invalid shape {shape}", tensor=name)
        n = 1
        for s in shape:
            n *= s
            if n > MAX_ELEMENTS:
                raise CorruptObjectError("manifest", f"absurd shape {shape}", tensor=name)
        offset, digest = d.get("offset"), d.get("digest")
        if offset is not None:  # a packed small tensor: one pack chunk, and its place in it
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or offset % itemsize:
                raise CorruptObjectError("manifest", f"bad pack offset {offset!r}", tensor=name)
            if len(chunks) != 1 or not 0 < n * itemsize <= PACK_MAX or offset + n * itemsize > CHUNK_BYTES:
                raise CorruptObjectError("manifest", f"bad packed entry ({n * itemsize} bytes at {offset})", tensor=name)
            if not _is_id(digest):
                raise CorruptObjectError("manifest", f"bad digest {digest!r}", tensor=name)
        else:
            expected = -(-n * itemsize // CHUNK_BYTES) if n else 0
            if len(chunks) != expected and not (n == 0 and len(chunks) == 0):
                raise CorruptObjectError("manifest", f"{len(chunks)} chunks for {n * itemsize} bytes", tensor=name)
            digest = None
        for c in chunks:
            if not _is_id(c):
                raise CorruptObjectError("manifest", f"bad chunk id {c!r}", tensor=name)
        return cls(dtype, shape, chunks, d.get("layer_type"), dict(d.get("extra") or {}), offset, digest)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value)


def pack_bytes(tree: Any) -> dict[str, int]:
    """{pack chunk id: bytes of the tree's tensors in it}: splits a shared pack's cost among its tensors."""
    out: dict[str, int] = {}
    for entry in tree.values():
        if entry.offset is not None:
            out[entry.chunks[0]] = out.get(entry.chunks[0], 0) + entry.nbytes
    return out


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
        self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="coral-io")
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_bytes = 0
        self._cache_limit = 64 * 1024 * 1024
        # (tensor name, chunk index) -> (xxh3-128, id, first bytes) of its last write: unchanged chunks skip BLAKE3
        # ... and whether that write stayed raw (compression did not pay), so the next skips the sampling
        self._fingerprints: dict[tuple[str, int], tuple[bytes, str, bytes, bool]] = {}
        self._fp_lock = threading.Lock()
        self._publish_slots = threading.Semaphore(_MAX_PUBLISHING)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ---- writing ----------------------------------------------------------------------------------------
    def _known(self, name: str, idx: int, view: memoryview) -> tuple[bytes, str | None]:
        """(xxh3-128 of the chunk, its id when this chunk of this tensor was last written with these bytes)."""
        fp = xxhash.xxh3_128_digest(view)
        with self._fp_lock:
            hit = self._fingerprints.get((name, idx))
        if hit is not None and hit[0] == fp and self.store.has(chunk_key(hit[1])):
            return fp, hit[1]
        return fp, None

    def _probe_matches(self, name: str, idx: int, view: memoryview) -> bool:
        """True when this chunk's first bytes equal those of its last write (cheap hint, never trusted)."""
        with self._fp_lock:
            hit = self._fingerprints.get((name, idx))
        return hit is not None and hit[2] == bytes(view[:_PROBE])

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

        The publish (fsync, rename) is handed to the pool, so the caller's next work -- and its commit
        object -- overlap the disk flush; ``write_tensors`` waits for it before it returns."""
        if fp is None:
            fp, known = self._known(name, idx, view)
            if known is not None:
                return known, 0, None  # same bytes as this chunk's last write: no BLAKE3, no write
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
        if xxhash.xxh3_128_digest(view) == fp:  # unchanged while it was hashed: safe to remember
            with self._fp_lock:
                if len(self._fingerprints) > _MAX_FINGERPRINTS:
                    self._fingerprints.clear()
                self._fingerprints[slot] = (fp, cid, bytes(view[:_PROBE]), stayed_raw)
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
            return self._pool.submit(run)
        except BaseException:
            self._publish_slots.release()
            pending.abort()
            raise

    def forget_fingerprints(self) -> None:
        """Drop the change-check cache (the next save hashes every chunk again)."""
        with self._fp_lock:
            self._fingerprints.clear()

    def write_tensors(self, items: Iterable[tuple[str, np.ndarray]]) -> tuple[dict[str, TensorEntry], int]:
        """Store every (name, array), durably; returns the entries and the bytes newly written."""
        entries, written, pending = self.write_tensors_deferred(items)
        pending.wait()
        return entries, written

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
        limit = 4 * self.threads  # chunks in flight: raw ones hold only a view, encoded ones <= 4 MiB each

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
            fut = self._pool.submit(
                self._write_chunk, slot[0], slot[1], part, itemsize, claimed, claim_lock, fp, aligned
            )
            pending.append((targets, fut))
            drain(limit)

        later: list[tuple[str, int, memoryview, int, bool]] = []
        small: list[tuple[str, np.ndarray]] = []
        try:
            for name, array in items:
                arr = _as_storable(name, array)
                nbytes = arr.nbytes
                if 0 < nbytes <= PACK_MAX:
                    entries[name] = None  # packed below, after the big chunks are under way
                    small.append((name, arr))
                    continue
                nchunks = -(-nbytes // CHUNK_BYTES) if nbytes else 0
                entries[name] = TensorEntry(dtype_name(arr.dtype), tuple(arr.shape), [""] * nchunks)
                if not nbytes:
                    continue
                view = memoryview(arr.reshape(-1).view(np.uint8))
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
            for slot, members, buf, itemsize in self._packs(small, entries):
                submit(slot, [(n, 0) for n in members], memoryview(buf), itemsize)
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

    @staticmethod
    def _packs(
        small: list[tuple[str, np.ndarray]], entries: dict[str, TensorEntry | None]
    ) -> Iterator[tuple[tuple[str, int], list[str], bytearray, int]]:
        """Concatenate small tensors per dtype into pack buffers (<= CHUNK_BYTES each); fills their entries.

        Yields (change-check slot, member names, bytes, itemsize) per pack. A pack's slot has a negative
        index, which never names a real chunk, so its change check is its own."""
        packs: dict[str, _Pack] = {}
        done: dict[str, int] = {}

        def flush(dt: str) -> tuple[tuple[str, int], list[str], bytearray, int]:
            pack = packs.pop(dt)
            k = done[dt] = done.get(dt, 0) + 1
            return (f"pack:{dt}", -k), pack.members, pack.buf, pack.itemsize

        for name, arr in small:
            dt = dtype_name(arr.dtype)
            raw = memoryview(arr.reshape(-1).view(np.uint8))
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

    # ---- reading ----------------------------------------------------------------------------------------
    def read_raw(self, chunk_id: str) -> bytes:
        return self.store.get(chunk_key(chunk_id))

    def _get_blob(self, chunk_id: str, tensor: str | None) -> bytes:
        try:
            return self.read_raw(chunk_id)
        except ObjectNotFoundError:
            raise ObjectNotFoundError(_missing(chunk_id, tensor)) from None
        except CorruptObjectError as exc:  # the store's own integrity check: say which tensor is hit
            raise _naming(exc, tensor) from None

    def header(self, chunk_id: str) -> ChunkHeader:
        return parse_header(self.store.get_range(chunk_key(chunk_id), 0, HEADER_SIZE + ID_BYTES))

    def _cached(self, chunk_id: str) -> np.ndarray | None:
        with self._cache_lock:
            hit = self._cache.get(chunk_id)
            if hit is not None:
                self._cache.move_to_end(chunk_id)
            return hit

    def read_chunk(self, chunk_id: str, tensor: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded, hash-checked bytes of a chunk (uint8 array), into ``out`` when given.

        A delta chunk's chain is walked iteratively (header by header, cycles refused) and decoded from its
        keyframe up; every link is hash-checked, so damage is reported on the object that has it.
        """
        hit = self._cached(chunk_id)
        if hit is not None:
            if out is None:
                return hit
            out[:] = hit
            return out
        chain: list[tuple[str, bytes, ChunkHeader]] = []
        data: np.ndarray | None = None
        cur, seen = chunk_id, set()
        while True:
            if cur in seen or len(chain) > _MAX_CHAIN_WALK:
                raise CorruptObjectError(chunk_id, "delta chain too long or cyclic", tensor)
            seen.add(cur)
            if cur != chunk_id:
                data = self._cached(cur)
                if data is not None:
                    break
            blob = self._get_blob(cur, tensor)
            try:
                head = parse_header(blob)
            except ValueError as exc:
                raise CorruptObjectError(cur, f"cannot decode: {exc}", tensor) from None
            chain.append((cur, blob, head))
            if head.base is None:
                break
            cur = head.base
        for i in range(len(chain) - 1, -1, -1):
            cid, blob, head = chain[i]
            base = data
            dest = out if i == 0 else None
            try:
                data = decode_chunk(blob, (lambda _b, b=base: b) if base is not None else None, out=dest)
            except CoralError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever damaged bytes make a decoder raise is damage
                raise CorruptObjectError(cid, f"cannot decode: {exc}", tensor) from None
            if hash_bytes(memoryview(data)) != cid:
                raise CorruptObjectError(cid, "content does not match its hash", tensor)
            if i > 0 or head.base is not None:  # bases, and delta chunks, are worth keeping decoded
                self._remember(cid, data if dest is None else data.copy())
        assert data is not None
        return data

    def _read_into(self, chunk_id: str, dest: np.ndarray, tensor: str | None) -> None:
        """Fill ``dest`` (uint8, the chunk's decoded length) with the verified chunk; raw chunks are read
        straight into it, with no intermediate copy."""
        if dest.nbytes > _SMALL_READ and self._cached(chunk_id) is None:
            key = chunk_key(chunk_id)
            try:
                head = parse_header(self.store.get_range(key, 0, HEADER_SIZE + ID_BYTES))
            except ObjectNotFoundError:
                raise ObjectNotFoundError(_missing(chunk_id, tensor)) from None
            except CorruptObjectError as exc:
                raise _naming(exc, tensor) from None
            except ValueError as exc:
                raise CorruptObjectError(chunk_id, f"cannot decode: {exc}", tensor) from None
            if head.codec == CODEC_RAW:
                if head.length != dest.nbytes:
                    raise CorruptObjectError(chunk_id, f"chunk has {head.length} bytes, expected {dest.nbytes}", tensor)
                try:
                    got = self.store.get_into(key, head.body, memoryview(dest))
                    size = self.store.size(key)
                except ObjectNotFoundError:
                    raise ObjectNotFoundError(_missing(chunk_id, tensor)) from None
                except CorruptObjectError as exc:
                    raise _naming(exc, tensor) from None
                if got != head.length or size != head.body + head.length:
                    raise CorruptObjectError(chunk_id, "cannot decode: raw body has the wrong length", tensor)
                if hash_bytes(memoryview(dest)) != chunk_id:
                    raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
                return
        try:
            self.read_chunk(chunk_id, tensor, out=dest)
        except ValueError as exc:  # the stored length differs from the manifest's
            raise CorruptObjectError(chunk_id, f"chunk size does not match the manifest: {exc}", tensor) from None

    def _remember(self, chunk_id: str, data: np.ndarray) -> None:
        with self._cache_lock:
            if chunk_id in self._cache:
                return
            self._cache[chunk_id] = data
            self._cache_bytes += data.nbytes
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes

    def _alloc(self, name: str, entry: TensorEntry) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        dt = dtype_from_name(entry.dtype)
        out = _empty(entry.shape, dt)
        flat = out.reshape(-1).view(np.uint8)
        if flat.nbytes != entry.nbytes or len(entry.chunks) != -(-flat.nbytes // CHUNK_BYTES):
            raise CorruptObjectError("manifest", "size mismatch", name)
        parts = [(cid, flat[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]) for i, cid in enumerate(entry.chunks)]
        return out, parts

    def _pack(self, chunk_id: str, tensor: str, packs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A pack chunk's verified bytes: from ``packs`` or the cache when there, else read (and kept)."""
        data = packs.get(chunk_id) if packs is not None else None
        if data is None:
            data = self._cached(chunk_id)
        if data is None:
            data = self.read_chunk(chunk_id, tensor)
            if packs is None:
                self._remember(chunk_id, data)  # its other tensors are likely read next
        if packs is not None:
            packs[chunk_id] = data
        return data

    def _unpack(self, name: str, entry: TensorEntry, packs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A packed small tensor, copied out of its (verified) pack chunk."""
        dt = dtype_from_name(entry.dtype)
        out = _empty(entry.shape, dt)
        flat = out.reshape(-1).view(np.uint8)
        data = self._pack(entry.chunks[0], name, packs)
        start = entry.offset or 0
        if start + flat.nbytes > data.nbytes:
            raise CorruptObjectError(
                "manifest", f"bytes {start}..{start + flat.nbytes} lie outside its pack ({data.nbytes} bytes)", name
            )
        flat[:] = data[start : start + flat.nbytes]
        return out

    def read_tensor(self, name: str, entry: TensorEntry) -> np.ndarray:
        """Assemble a tensor from its chunks (read in parallel, each verified) into one fresh array."""
        if entry.packed:
            if self.store.ranged_reads and self._cached(entry.chunks[0]) is None:
                ranged = self._unpack_ranged(name, entry)
                if ranged is not None:
                    return ranged
            return self._unpack(name, entry)
        out, parts = self._alloc(name, entry)
        if len(parts) == 1:
            self._read_into(parts[0][0], parts[0][1], name)
        else:
            futures = [self._pool.submit(self._read_into, cid, dest, name) for cid, dest in parts]
            _wait_all(futures)
        return out

    def _unpack_ranged(self, name: str, entry: TensorEntry) -> np.ndarray | None:
        """A packed tensor read alone from a remote store: only its bytes of a raw pack (checked against its
        digest), not the whole pack; None when the pack is encoded (then it is read whole)."""
        key = chunk_key(entry.chunks[0])
        try:
            head = parse_header(self.store.get_range(key, 0, HEADER_SIZE + ID_BYTES))
        except ObjectNotFoundError:
            raise ObjectNotFoundError(_missing(entry.chunks[0], name)) from None
        except ValueError:
            return None  # undecodable: the whole read reports it
        if head.codec != CODEC_RAW or head.base is not None:
            return None
        out = _empty(entry.shape, dtype_from_name(entry.dtype))
        flat = out.reshape(-1).view(np.uint8)
        start = entry.offset or 0
        if start + flat.nbytes > head.length:
            raise CorruptObjectError(
                "manifest", f"bytes {start}..{start + flat.nbytes} lie outside its pack ({head.length} bytes)", name
            )
        got = self.store.get_into(key, head.body + start, memoryview(flat))
        if got != flat.nbytes or hash_bytes(memoryview(flat)) != entry.digest:
            raise CorruptObjectError(entry.chunks[0], "packed tensor does not match its digest", name)
        return out

    def read_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """Read many tensors at once: every chunk of every tensor goes through the pool together."""
        outs: dict[str, np.ndarray] = {}
        futures: list[cf.Future[None]] = []
        small: list[tuple[str, np.ndarray, str]] = []
        packed: list[tuple[str, TensorEntry]] = []
        try:
            for name, entry in items:
                if entry.packed:
                    packed.append((name, entry))
                    outs[name] = _EMPTY  # keeps the tree's order; filled below
                    continue
                out, parts = self._alloc(name, entry)
                outs[name] = out
                for cid, dest in parts:
                    if dest.nbytes > _SMALL_READ:
                        futures.append(self._pool.submit(self._read_into, cid, dest, name))
                    else:
                        small.append((cid, dest, name))
            # small chunks (biases, norms) are read here while the pool reads the big ones: handing each
            # to a thread costs more in wake-ups and GIL hand-offs than reading it
            for cid, dest, name in small:
                self._read_into(cid, dest, name)
            packs: dict[str, np.ndarray] = {}  # each pack is read once, however many tensors it holds
            for name, entry in packed:
                outs[name] = self._unpack(name, entry, packs)
        except BaseException:
            cf.wait(futures)  # no read is left running behind the caller
            raise
        _wait_all(futures)
        return outs

    def map_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """``read_tensors``, but a tensor stored as raw chunks comes back mapped from the chunk files.

        Its array's pages are the page cache's own (no copy in this process's memory; a write to the
        array copies the page, never reaching the file). Every mapped chunk is BLAKE3-checked before this
        returns, like every read. Chunks that are not raw (older, repacked checkpoints) are decoded into
        their place; tensors with no raw chunk, small ones and packed ones are read as usual. Where mapping
        is not available (not Linux, or a store without files) it is ``read_tensors``.
        """
        items = list(items)
        if not _mapping.available():
            return self.read_tensors(items)
        outs: dict[str, np.ndarray] = {name: _EMPTY for name, _ in items}  # keeps the tree's order
        rest: list[tuple[str, TensorEntry]] = []
        futures: list[cf.Future[None]] = []
        try:
            for name, entry in items:
                mapped = None
                if not entry.packed and entry.nbytes >= _MAP_MIN:
                    mapped = self._map_tensor(name, entry, futures)
                if mapped is None:
                    rest.append((name, entry))
                else:
                    outs[name] = mapped
            outs.update(self.read_tensors(rest))
        except BaseException:
            cf.wait(futures)
            raise
        _wait_all(futures)
        return outs

    def _map_tensor(self, name: str, entry: TensorEntry, futures: list[cf.Future[None]]) -> np.ndarray | None:
        """Map one tensor's raw chunks into one array (None when none can be mapped); the checks and the
        decoding of unmappable chunks are queued on ``futures``."""
        heads: list[tuple[str, int, ChunkHeader, int]] = []  # (id, fd, header, payload size)
        region: _mapping.Region | None = None
        try:
            for cid in entry.chunks:
                key = chunk_key(cid)
                try:
                    fd = self.store.open_file(key)
                except ObjectNotFoundError:
                    raise ObjectNotFoundError(_missing(cid, name)) from None
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
                    and (head.body % _mapping.PAGE == 0 or not page_aligned)
                )

            if len(heads) == 1 and mappable(heads[0][2], heads[0][3], nbytes, False):
                _cid, fd, head, _size = heads[0]  # one chunk: map the file from its start, the body at its offset
                region = _mapping.Region(nbytes, lead=head.body)
                region.map_file(0, fd, 0, head.body + head.length)
                ok = [True]
            else:
                ok = [mappable(head, size, span[1], True) for (_cid, _fd, head, size), span in zip(heads, spans)]
                if not any(ok):
                    return None  # nothing to map: a plain read is faster
                region = _mapping.Region(nbytes)
                for mapped, (_cid, fd, head, _size), (at, length) in zip(ok, heads, spans):
                    if mapped:
                        region.map_file(at, fd, head.body, length)
                    else:
                        region.map_anonymous(at, length)
            # what the store's own integrity record covers besides the body: the header (and its padding)
            try:
                seals = [
                    (os.pread(fd, head.body, 0), self.store.payload_check(chunk_key(cid), fd)) if mapped else None
                    for mapped, (cid, fd, head, _size) in zip(ok, heads)
                ]
            except CorruptObjectError as exc:
                raise _naming(exc, name) from None
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
        for (cid, _fd, _head, _size), seal, (at, length) in zip(heads, seals, spans):
            view = flat[at : at + length]
            if seal is not None:
                futures.append(self._pool.submit(_check_mapped, cid, view, name, *seal))
            else:
                futures.append(self._pool.submit(self._read_into, cid, view, name))
        return flat.view(dtype_from_name(entry.dtype)).reshape(entry.shape)

    def verify_chunk(self, chunk_id: str) -> None:
        """Raise CorruptObjectError/ObjectNotFoundError unless the chunk decodes to its hash."""
        with self._cache_lock:
            old = self._cache.pop(chunk_id, None)
            if old is not None:
                self._cache_bytes -= old.nbytes
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
            base_head = self.header(base_id)
            if chunk_id in set(self.chain(base_id)):
                base_id = base_head = None
        old = self.read_raw(chunk_id)
        try:
            old_head = parse_header(old)
        except ValueError as exc:
            raise CorruptObjectError(chunk_id, f"cannot decode: {exc}") from None
        was_raw = old_head.codec == CODEC_RAW
        if base_id is None and (not was_raw or not self.compress):
            return 0
        if was_raw and len(old) == old_head.body + old_head.length:
            data = np.frombuffer(old, dtype=np.uint8, offset=old_head.body)  # no copy
            if hash_bytes(memoryview(data)) != chunk_id:
                raise CorruptObjectError(chunk_id, "content does not match its hash")
        else:
            data = self.read_chunk(chunk_id)
        itemsize = dtype_from_name(dtype).itemsize
        delta: bytes | None = None
        base: np.ndarray | None = None
        if base_id is not None and base_head is not None:
            base = self.read_chunk(base_id)
            if base.nbytes == data.nbytes:
                delta = encode_delta(
                    memoryview(data), memoryview(base), base_id, height, itemsize, is_float=is_float(dtype)
                )
        key: bytes | None = None
        if was_raw and self.compress:
            # skip the full keyframe encode when samples say it cannot come near the delta
            if delta is not None and data.nbytes > 4 * _SAMPLE_BYTES:
                lanes = 8 if itemsize == 16 else itemsize
                est = sum(min(e, 1.0) for e in plane_estimates(memoryview(data), lanes, self.level)) / lanes
                if est * data.nbytes > 1.1 * len(delta):
                    est = -1.0
            else:
                est = 0.0
            if est >= 0.0:
                key = encode_chunk(memoryview(data), itemsize, level=self.level, compress=True)
        if key is not None and (delta is None or len(delta) * 1.02 >= len(key)):
            blob, base = key, None
        elif delta is not None:
            blob = delta
        else:
            return 0
        if len(blob) >= 0.97 * len(old):
            return 0
        # the decoded content is unchanged, so replacing the object keeps every reference valid
        check = decode_chunk(blob, (lambda _b: base) if base is not None else None)  # type: ignore[arg-type,return-value]
        if hash_bytes(memoryview(check)) != chunk_id:
            raise CorruptObjectError(chunk_id, "re-encoding did not round-trip")
        self.store.put(chunk_key(chunk_id), blob, overwrite=True)
        return len(old) - len(blob)


_HUGE_PAGE = 2 * 1024 * 1024
_EMPTY = np.empty(0, dtype=np.uint8)


def _empty(shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    """``np.empty``, 2 MiB-aligned when big: the kernel can then back it with huge pages (numpy asks for
    them), so filling it costs a few hundred page faults instead of one per 4 KiB."""
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n < _HUGE_PAGE:
        return np.empty(shape, dtype=dt)
    raw = np.empty(n + _HUGE_PAGE, dtype=np.uint8)
    off = (-raw.ctypes.data) % _HUGE_PAGE
    return raw[off : off + n].view(dt).reshape(shape)


def _check_mapped(
    chunk_id: str, view: np.ndarray, tensor: str, prefix: bytes, check: Any
) -> None:
    """A mapped chunk's checks: BLAKE3 of its body, and the store's seal over header + body when it keeps one."""
    if hash_bytes(memoryview(view)) != chunk_id:
        raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
    if check is not None:
        try:
            check([prefix, memoryview(view)])
        except CorruptObjectError as exc:
            raise _naming(exc, tensor) from None


def _naming(exc: CorruptObjectError, tensor: str | None) -> CorruptObjectError:
    """``exc`` naming ``tensor`` too (a store reports damage by object id only)."""
    if exc.tensor or not tensor:
        return exc
    prefix = f"corrupt object {exc.object_id}: "
    text = str(exc)
    return CorruptObjectError(exc.object_id, text.removeprefix(prefix), tensor)


def _missing(chunk_id: str, tensor: str | None) -> str:
    return f"chunk {chunk_id} of tensor {tensor!r} is missing from the store" if tensor else f"chunk {chunk_id} is missing"


def _wait_all(futures: list[cf.Future[Any]]) -> None:
    """Wait for every future, then raise the first error (no read is left running behind the caller)."""
    cf.wait(futures)
    for f in futures:
        f.result()


def _as_storable(name: str, array: Any) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"weights[{name!r}]", type(array).__name__, "expected a numpy array")
    dtype_name(array.dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array
