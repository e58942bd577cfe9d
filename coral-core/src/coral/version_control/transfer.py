"""Copy content-addressed objects between two stores: in parallel, verified, only what the other side lacks.

An object already at the destination is never sent again, so a transfer cut off at any point resumes by
running it again. A delta chunk's base is copied before the chunk (the destination never holds a delta it
cannot decode), and every chunk is decoded and hash-checked before it is written, so damage never spreads.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..codecs import decode_chunk, parse_header
from ..errors import CoralError, CorruptObjectError, ExitDeadlineError, ObjectNotFoundError
from ..objects.tensors import ObjectStore, chunk_key, hash_bytes
from ..store.base import Store
from .background import exit_wait_limit

log = logging.getLogger(__name__)

#: ``progress(done_bytes, total_bytes)``; the total is an estimate until the end.
ProgressFn = Callable[[int, int], None]
TRANSFER_THREADS = 16
_MAX_CHAIN = 4096
_WAIT_S = 3600.0


@dataclass
class TransferStats:
    """What one transfer moved: objects written at the destination and their stored bytes."""

    objects: int = 0
    bytes: int = 0
    skipped: int = 0  # objects the destination already had

    def add(self, other: TransferStats) -> None:
        self.objects += other.objects
        self.bytes += other.bytes
        self.skipped += other.skipped


class _Meter:
    """Thread-safe byte counter feeding a progress callback."""

    def __init__(self, progress: ProgressFn | None, estimate: int) -> None:
        self.progress = progress
        self.estimate = estimate
        self.done = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            done, total = self.done, max(self.estimate, self.done)
        if self.progress is not None:
            self.progress(done, total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.done)


class ChunkCopier:
    """Copies chunks ``src`` -> ``dst``, each at most once, bases before deltas, verified before written.

    ``decoded(cid)`` returns a chunk's decoded bytes for verifying deltas (from whichever side holds a good
    copy); ``overwrite`` names chunks to replace even when ``dst`` has them (repair of damaged objects).
    """

    def __init__(
        self,
        src: Store,
        dst: Store,
        decoded: Callable[[str], np.ndarray],
        meter: _Meter,
        overwrite: Iterable[str] = (),
    ) -> None:
        self.src, self.dst, self.decoded, self.meter = src, dst, decoded, meter
        self.overwrite = set(overwrite)
        self.stats = TransferStats()
        self._done: set[str] = set()
        self._busy: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def copy(self, cid: str, path: tuple[str, ...] = ()) -> None:
        """Make ``cid`` (and its delta bases, first) present and verified at the destination."""
        if cid in path or len(path) > _MAX_CHAIN:
            raise CorruptObjectError(path[0] if path else cid, "delta chain too long or cyclic")
        with self._lock:
            if cid in self._done:
                return
            event = self._busy.get(cid)
            mine = event is None
            if mine:
                event = self._busy[cid] = threading.Event()
        assert event is not None
        if not mine:  # another thread is copying it; a chain is never cyclic in a store that verifies
            if not event.wait(timeout=_WAIT_S):
                raise CorruptObjectError(cid, "gave up waiting for its copy (a cyclic delta chain?)")
            return
        try:
            key = chunk_key(cid)
            if cid not in self.overwrite and self.dst.has(key):
                with self._lock:
                    self.stats.skipped += 1
                return
            blob = self.src.get(key)
            try:
                head = parse_header(blob)
            except ValueError as exc:
                raise CorruptObjectError(cid, f"cannot decode: {exc}") from None
            if head.base is not None:
                self.copy(head.base, (*path, cid))  # the base first: a delta never lands without what it needs
            self._verify(cid, blob)
            self.dst.put(key, blob, overwrite=cid in self.overwrite)
            with self._lock:
                self.stats.objects += 1
                self.stats.bytes += len(blob)
            self.meter.add(len(blob))
        finally:
            with self._lock:
                self._done.add(cid)
                self._busy.pop(cid, None)
            event.set()

    def _verify(self, cid: str, blob: bytes) -> None:
        try:
            data = decode_chunk(blob, self.decoded)
        except CoralError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever damaged bytes make a decoder raise is damage
            raise CorruptObjectError(cid, f"cannot decode: {exc}") from None
        if hash_bytes(data.data) != cid:
            raise CorruptObjectError(cid, "content does not match its hash (not sent)")


def first_good(*objects: ObjectStore) -> Callable[[str], np.ndarray]:
    """A reader of decoded chunks that asks each object store in turn (the first good copy wins)."""

    def read(cid: str) -> np.ndarray:
        last: Exception | None = None
        for obj in objects:
            try:
                return obj.read_chunk(cid)
            except (ObjectNotFoundError, CorruptObjectError) as exc:
                last = exc
        assert last is not None
        raise last

    return read


def _unless_past_exit_deadline(copy: Callable[[str], object], cid: str) -> None:
    """Copy one chunk, unless a preemption's deadline passed: the queued rest is then dropped, so the process
    can exit (a pool's queued work would otherwise hold the interpreter's exit until all of it is sent)."""
    if exit_wait_limit() == 0.0:
        raise ExitDeadlineError(f"chunk {cid} not copied: the preemption deadline passed")
    copy(cid)


def copy_chunks(
    src: Store,
    dst: Store,
    chunk_ids: Iterable[str],
    decoded: Callable[[str], np.ndarray],
    *,
    progress: ProgressFn | None = None,
    estimate: int = 0,
    overwrite: Iterable[str] = (),
    threads: int = TRANSFER_THREADS,
) -> TransferStats:
    """Copy ``chunk_ids`` (with their delta bases) that ``dst`` lacks, ``threads`` at a time."""
    meter = _Meter(progress, estimate)
    copier = ChunkCopier(src, dst, decoded, meter, overwrite)
    ids = list(dict.fromkeys(chunk_ids))
    if ids:
        with cf.ThreadPoolExecutor(max(1, min(threads, len(ids))), thread_name_prefix="coral-transfer") as pool:
            futures = [pool.submit(_unless_past_exit_deadline, copier.copy, cid) for cid in ids]
            cf.wait(futures)
            for fut in futures:
                exc = fut.exception()
                if exc is not None:
                    raise exc
    meter.finish()
    return copier.stats


def copy_plain(src: Store, dst: Store, keys: Iterable[str], *, threads: int = TRANSFER_THREADS) -> TransferStats:
    """Copy small immutable objects (commits) that ``dst`` lacks; the caller has checked their content."""
    stats = TransferStats()
    lock = threading.Lock()

    def one(key: str) -> None:
        if dst.has(key):
            with lock:
                stats.skipped += 1
            return
        blob = src.get(key)
        dst.put(key, blob)
        with lock:
            stats.objects += 1
            stats.bytes += len(blob)

    keys = list(dict.fromkeys(keys))
    if keys:
        with cf.ThreadPoolExecutor(max(1, min(threads, len(keys))), thread_name_prefix="coral-transfer") as pool:
            list(pool.map(one, keys))
    return stats
