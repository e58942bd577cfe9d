"""The read path: chunks back into tensors, each chunk verified against its id, through the shared pool.

Raw chunks are read straight into the destination array; compressed and delta chunks are decoded (a delta
chain walked iteratively from its keyframe up, every link hash-checked, so damage is reported on the
object that has it). Packed small tensors are copied out of their pack chunk, read once per call.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from ..codecs import CODEC_RAW, decode_chunk, parse_header
from ..codecs.chunk import HEADER_SIZE, ID_BYTES, PAGE_ALIGN, ChunkHeader
from ..core.dtypes import dtype_from_name
from ..errors import CoralError, CorruptObjectError, ObjectNotFoundError
from ..store.base import Store
from .cache import ChunkCache
from .manifest import CHUNK_BYTES, TensorEntry, chunk_key, hash_bytes
from .pool import IOPool, wait_all

MAX_CHAIN_WALK = 4096  # a read refuses longer (corrupt or cyclic) delta chains
SMALL_READ = 256 * 1024  # chunks up to this size are read whole in one request
_HUGE_PAGE = 2 * 1024 * 1024
_MAX_TRAILER = 4096  # a store's own record after an object's payload (the local store's seal: 20 bytes)
EMPTY = np.empty(0, dtype=np.uint8)  # a placeholder that keeps a result dict in the tree's order


class TensorReader:
    """Reads and verifies chunks of ``store`` (decoded bases and packs kept in ``cache``), in parallel on ``pool``."""

    def __init__(self, store: Store, pool: IOPool, cache: ChunkCache, readers: int | None = None) -> None:
        self.store = store
        self.pool = pool
        self.cache = cache
        # pool threads that read one batch beside the caller's (default: all of them)
        self.readers = max(1, min(pool.threads, readers or pool.threads))

    def read_raw(self, chunk_id: str) -> bytes:
        """A chunk object's stored bytes (encoded, not verified against its id)."""
        return self.store.get(chunk_key(chunk_id))

    def _get_blob(self, chunk_id: str, tensor: str | None) -> bytes:
        try:
            return self.read_raw(chunk_id)
        except ObjectNotFoundError:
            raise missing_chunk(chunk_id, tensor) from None
        except CorruptObjectError as exc:  # the store's own integrity check: say which tensor is hit
            raise naming_tensor(exc, tensor) from None

    def header(self, chunk_id: str) -> ChunkHeader:
        """A chunk's header (codec, lengths, delta base), read without the body."""
        return parse_header(self.store.get_range(chunk_key(chunk_id), 0, HEADER_SIZE + ID_BYTES))

    def read_chunk(self, chunk_id: str, tensor: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded, hash-checked bytes of a chunk (uint8 array), into ``out`` when given.

        A delta chunk's chain is walked iteratively (header by header, cycles refused) and decoded from its
        keyframe up; every link is hash-checked, so damage is reported on the object that has it.
        """
        hit = self.cache.get(chunk_id)
        if hit is not None:
            if out is None:
                return hit
            out[:] = hit
            return out
        chain: list[tuple[str, bytes, ChunkHeader]] = []
        data: np.ndarray | None = None
        cur, seen = chunk_id, set()
        while True:
            if cur in seen or len(chain) > MAX_CHAIN_WALK:
                raise CorruptObjectError(chunk_id, "delta chain too long or cyclic", tensor)
            seen.add(cur)
            if cur != chunk_id:
                data = self.cache.get(cur)
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
                data = decode_chunk(blob, _constant(base) if base is not None else None, out=dest)
            except CoralError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever damaged bytes make a decoder raise is damage
                raise CorruptObjectError(cid, f"cannot decode: {exc}", tensor) from None
            if hash_bytes(data.data) != cid:
                raise CorruptObjectError(cid, "content does not match its hash", tensor)
            if i > 0 or head.base is not None:  # bases, and delta chunks, are worth keeping decoded
                self.cache.put(cid, data if dest is None else data.copy())
        assert data is not None
        return data

    def read_into(self, chunk_id: str, dest: np.ndarray, tensor: str | None) -> None:
        """Fill ``dest`` (uint8, the chunk's decoded length) with the verified chunk; raw chunks are read
        straight into it, with no intermediate copy."""
        if dest.nbytes > SMALL_READ and self.cache.get(chunk_id) is None:
            raw = self._read_raw_file(chunk_id, dest, tensor)
            if raw:
                return
        else:
            raw = False  # small or cached: read whole below
        if raw is None:  # a store without files: its header, then the body straight into ``dest``
            key = chunk_key(chunk_id)
            try:
                head = parse_header(self.store.get_range(key, 0, HEADER_SIZE + ID_BYTES))
            except ObjectNotFoundError:
                raise missing_chunk(chunk_id, tensor) from None
            except CorruptObjectError as exc:
                raise naming_tensor(exc, tensor) from None
            except ValueError as exc:
                raise CorruptObjectError(chunk_id, f"cannot decode: {exc}", tensor) from None
            if head.codec == CODEC_RAW:
                if head.length != dest.nbytes:
                    raise CorruptObjectError(chunk_id, f"chunk has {head.length} bytes, expected {dest.nbytes}", tensor)
                try:
                    got = self.store.get_into(key, head.body, dest.data)
                    size = self.store.size(key)
                except ObjectNotFoundError:
                    raise missing_chunk(chunk_id, tensor) from None
                except CorruptObjectError as exc:
                    raise naming_tensor(exc, tensor) from None
                if got != head.length or size != head.body + head.length:
                    raise CorruptObjectError(chunk_id, "cannot decode: raw body has the wrong length", tensor)
                if hash_bytes(dest.data) != chunk_id:
                    raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
                return
        try:
            self.read_chunk(chunk_id, tensor, out=dest)
        except ValueError as exc:  # the stored length differs from the manifest's
            raise CorruptObjectError(chunk_id, f"chunk size does not match the manifest: {exc}", tensor) from None

    def _read_raw_file(self, chunk_id: str, dest: np.ndarray, tensor: str | None) -> bool | None:
        """A raw chunk read into ``dest`` through ONE open file of a store that keeps files: True when read,
        False when the file is not a raw chunk's (the caller's general path decodes it into ``dest``, or names
        the damage), None when the store keeps no files.

        The layout is guessed from the file's size and confirmed by its header; the body is read straight
        into ``dest``, BLAKE3-checked, and the whole payload checked against the store's seal. Before, a chunk
        cost two opens, three reads and a stat.
        """
        key = chunk_key(chunk_id)
        fd = open_chunk_file(self.store, chunk_id, tensor)
        if fd is None:
            return None
        try:
            head, prefix = self._read_raw_layout(fd, dest)
            if head is None:  # not a raw chunk, or a damaged file: the general path decodes or names it
                return False
            try:
                check = self.store.payload_check(key, fd)  # its record was read with the body: cached
            except CorruptObjectError as exc:
                raise naming_tensor(exc, tensor) from None
        finally:
            os.close(fd)
        view = dest.data.cast("B")
        if hash_bytes(view) != chunk_id:
            raise CorruptObjectError(chunk_id, "content does not match its hash", tensor)
        if check is not None:
            try:
                check([prefix, view])
            except CorruptObjectError as exc:
                raise naming_tensor(exc, tensor) from None
        return True

    @staticmethod
    def _read_raw_layout(fd: int, dest: np.ndarray) -> tuple[ChunkHeader | None, bytes]:
        """Read a raw chunk's file when its size fits a raw layout (body page-aligned, or right after the
        header) with a short record after it: the bytes before the body, then the body straight into
        ``dest``. Returns (header, the bytes before the body), or (None, b"") when the size or the header
        does not fit (``dest`` may then hold stray bytes, which the general path overwrites).

        Two reads, not one vectored read of the whole file: on this VM's disk one ``preadv`` of header, body
        and record took 206 ms cold for 172 MiB of chunks against 107 ms this way (BENCHMARKS.md, U4)."""
        size, n = os.fstat(fd).st_size, dest.nbytes
        for body in (PAGE_ALIGN, HEADER_SIZE):
            if 0 <= size - body - n <= _MAX_TRAILER:
                break
        else:
            return None, b""
        prefix = os.pread(fd, body, 0)
        try:
            head = parse_header(prefix)
        except ValueError:
            return None, b""
        if head.codec != CODEC_RAW or head.body != body or head.length != n:
            return None, b""
        if os.preadv(fd, [dest.data.cast("B")], body) != n:
            return None, b""
        return head, prefix

    def verify_chunk(self, chunk_id: str) -> None:
        """Raise CorruptObjectError/ObjectNotFoundError unless the chunk decodes to its hash."""
        self.cache.drop(chunk_id)
        self.read_chunk(chunk_id)

    def _alloc(self, name: str, entry: TensorEntry) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        dt = dtype_from_name(entry.dtype)
        out = empty_array(entry.shape, dt)
        flat = out.reshape(-1).view(np.uint8)
        if flat.nbytes != entry.nbytes or len(entry.chunks) != -(-flat.nbytes // CHUNK_BYTES):
            raise CorruptObjectError("manifest", "size mismatch", name)
        parts = [(cid, flat[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]) for i, cid in enumerate(entry.chunks)]
        return out, parts

    def _pack(self, chunk_id: str, tensor: str, packs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A pack chunk's verified bytes: from ``packs`` or the cache when there, else read (and kept)."""
        data = packs.get(chunk_id) if packs is not None else None
        if data is None:
            data = self.cache.get(chunk_id)
        if data is None:
            data = self.read_chunk(chunk_id, tensor)
            if packs is None:
                self.cache.put(chunk_id, data)  # its other tensors are likely read next
        if packs is not None:
            packs[chunk_id] = data
        return data

    def _unpack_ranged(self, name: str, entry: TensorEntry) -> np.ndarray | None:
        """A packed tensor read alone from a remote store: only its bytes of a raw pack (checked against its
        digest), not the whole pack; None when the pack is encoded (then it is read whole)."""
        key = chunk_key(entry.chunks[0])
        try:
            head = parse_header(self.store.get_range(key, 0, HEADER_SIZE + ID_BYTES))
        except ObjectNotFoundError:
            raise missing_chunk(entry.chunks[0], name) from None
        except ValueError:
            return None  # undecodable: the whole read reports it
        if head.codec != CODEC_RAW or head.base is not None:
            return None
        out = empty_array(entry.shape, dtype_from_name(entry.dtype))
        flat = out.reshape(-1).view(np.uint8)
        start = entry.offset or 0
        if start + flat.nbytes > head.length:
            raise CorruptObjectError(
                "manifest", f"bytes {start}..{start + flat.nbytes} lie outside its pack ({head.length} bytes)", name
            )
        got = self.store.get_into(key, head.body + start, flat.data)
        if got != flat.nbytes or hash_bytes(flat.data) != entry.digest:
            raise CorruptObjectError(entry.chunks[0], "packed tensor does not match its digest", name)
        return out

    def _unpack(self, name: str, entry: TensorEntry, packs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A packed small tensor, copied out of its (verified) pack chunk."""
        dt = dtype_from_name(entry.dtype)
        out = empty_array(entry.shape, dt)
        flat = out.reshape(-1).view(np.uint8)
        try:
            data = self._pack(entry.chunks[0], name, packs)
        except CorruptObjectError as exc:  # a damaged pack need not cost its intact neighbours
            reason = str(exc).split(": ", 1)[-1]
            flat[:] = self._salvage_packed(name, entry, CorruptObjectError(exc.object_id, reason, name))
            return out
        start = entry.offset or 0
        if start + flat.nbytes > data.nbytes:
            raise CorruptObjectError(
                "manifest", f"bytes {start}..{start + flat.nbytes} lie outside its pack ({data.nbytes} bytes)", name
            )
        flat[:] = data[start : start + flat.nbytes]
        return out

    def _salvage_packed(self, name: str, entry: TensorEntry, exc: CorruptObjectError) -> np.ndarray:
        """A packed tensor's own bytes from a raw pack that failed its check, accepted only when they match the
        tensor's own digest; else ``exc`` (which names this tensor) is raised."""
        cid = entry.chunks[0]
        try:
            head = self.header(cid)
            if head.codec != CODEC_RAW or head.base is not None or entry.digest is None:
                raise exc
            raw = self.store.get_range(chunk_key(cid), head.body + (entry.offset or 0), entry.nbytes)
        except (CoralError, ValueError):
            raise exc from None
        if len(raw) != entry.nbytes or hash_bytes(raw) != entry.digest:
            raise exc
        return np.frombuffer(raw, dtype=np.uint8)

    def read_tensor(self, name: str, entry: TensorEntry) -> np.ndarray:
        """Assemble a tensor from its chunks (read in parallel, each verified) into one fresh array."""
        if entry.packed:
            if self.store.ranged_reads and self.cache.get(entry.chunks[0]) is None:
                ranged = self._unpack_ranged(name, entry)
                if ranged is not None:
                    return ranged
            return self._unpack(name, entry)
        out, parts = self._alloc(name, entry)
        self._read_all(deque((cid, dest, name) for cid, dest in parts))
        return out

    def read_tensors(self, items: Iterable[tuple[str, TensorEntry]]) -> dict[str, np.ndarray]:
        """Read many tensors at once: every big chunk of every tensor goes on one queue that the pool's threads
        (and this one) drain together."""
        outs: dict[str, np.ndarray] = {}
        jobs: deque[tuple[str, np.ndarray, str]] = deque()
        small: list[tuple[str, np.ndarray, str]] = []
        packed: list[tuple[str, TensorEntry]] = []
        for name, entry in items:
            if entry.packed:
                packed.append((name, entry))
                outs[name] = EMPTY  # keeps the tree's order; filled below
                continue
            out, parts = self._alloc(name, entry)
            outs[name] = out
            for cid, dest in parts:
                (jobs if dest.nbytes > SMALL_READ else small).append((cid, dest, name))

        def read_small() -> None:  # biases, norms and packs: read here while the pool reads the big chunks
            for cid, dest, name in small:
                self.read_into(cid, dest, name)
            packs: dict[str, np.ndarray] = {}  # each pack is read once, however many tensors it holds
            for name, entry in packed:
                outs[name] = self._unpack(name, entry, packs)

        self._read_all(jobs, read_small)
        return outs

    def _read_all(self, jobs: deque[tuple[str, np.ndarray, str]], first: Callable[[], None] | None = None) -> None:
        """Read every chunk on ``jobs``: ``readers`` pool threads and this one drain the queue (after this one
        has run ``first``). One task per thread, not one per chunk: a submit per chunk cost a wake-up and a
        GIL hand-off each, and on a local disk more threads than cores only fought over the GIL."""
        futures = [self.pool.submit(self._drain, jobs) for _ in range(min(self.readers, len(jobs) - 1))]
        try:
            if first is not None:
                first()
            self._drain(jobs)
        except BaseException:
            jobs.clear()
            cf.wait(futures)  # no read is left running behind the caller
            raise
        wait_all(futures)

    def _drain(self, jobs: deque[tuple[str, np.ndarray, str]]) -> None:
        """Read chunks off ``jobs`` until it is empty; a failure empties it, so the other drainers stop too."""
        while True:
            try:
                cid, dest, name = jobs.popleft()
            except IndexError:
                return
            try:
                self.read_into(cid, dest, name)
            except BaseException:
                jobs.clear()
                raise


def empty_array(shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    """``np.empty``, 2 MiB-aligned when big: the kernel can then back it with huge pages (numpy asks for
    them), so filling it costs a few hundred page faults instead of one per 4 KiB."""
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n < _HUGE_PAGE:
        return np.empty(shape, dtype=dt)
    raw = np.empty(n + _HUGE_PAGE, dtype=np.uint8)
    off = (-raw.ctypes.data) % _HUGE_PAGE
    return raw[off : off + n].view(dt).reshape(shape)


def open_chunk_file(store: Store, chunk_id: str, tensor: str | None) -> int | None:
    """A read-only descriptor of the chunk's file (the caller closes it); None when ``store`` keeps no files.
    A missing chunk raises ObjectNotFoundError naming ``tensor``."""
    try:
        return store.open_file(chunk_key(chunk_id))
    except ObjectNotFoundError:
        raise missing_chunk(chunk_id, tensor) from None


def naming_tensor(exc: CorruptObjectError, tensor: str | None) -> CorruptObjectError:
    """``exc`` naming ``tensor`` too (a store reports damage by object id only)."""
    if exc.tensor or not tensor:
        return exc
    prefix = f"corrupt object {exc.object_id}: "
    text = str(exc)
    return CorruptObjectError(exc.object_id, text.removeprefix(prefix), tensor)


def missing_chunk(chunk_id: str, tensor: str | None) -> ObjectNotFoundError:
    """The error for a chunk the store does not have, naming the tensor that needs it."""
    if tensor:
        return ObjectNotFoundError(f"chunk {chunk_id} of tensor {tensor!r} is missing from the store")
    return ObjectNotFoundError(f"chunk {chunk_id} is missing")


def _constant(base: np.ndarray) -> Callable[[str], np.ndarray]:
    """A ``get_base`` for decode_chunk that answers ``base`` (the chain's next link, already decoded)."""
    return lambda _base_id: base
