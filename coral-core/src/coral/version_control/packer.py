"""Background packing: after each commit, its parent's chunks are re-encoded (deltas or planes+zstd) in a
low-priority thread, never in the thread that committed.

The queue is durable: each commit to pack is a ref ``pack/pending/<id>``, created by compare-and-swap once
the commit is made and deleted once its pair is packed. A process that exits or is killed leaves the refs;
the next writer's packer (or ``coral repack``) drains them, as git's auto-gc picks up loose objects.
Re-encoding rewrites an object atomically under the same id, so a kill at any instant loses nothing.
At exit, what is still queued in a local store is handed to a detached lowest-priority process
(``pack_worker``), as git's ``gc --auto`` detaches: the end of a run does not wait for space optimisation.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

from ..errors import CoralError, CorruptObjectError, ObjectNotFoundError
from ..objects.tensors import ObjectStore
from ..store.base import Store
from ..store.local import LocalStore
from . import packing
from .history import History

log = logging.getLogger(__name__)

PENDING_PREFIX = "pack/pending/"
IDLE_NICENESS = 19


def lower_thread_priority(niceness: int = IDLE_NICENESS) -> bool:
    """Give the calling thread the lowest CPU priority (Linux: per thread); False where not supported."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        return True
    except (AttributeError, OSError):
        return False


def mark_pending(store: Store, commit_id: str) -> None:
    """Record durably that ``commit_id``'s first parent waits to be packed against it."""
    store.compare_and_swap(PENDING_PREFIX + commit_id, None, commit_id)


def pending_commits(store: Store, history: History) -> list[str]:
    """Commits waiting to be packed, oldest first."""
    ids = [name[len(PENDING_PREFIX) :] for name in store.list_refs(PENDING_PREFIX)]
    return sorted(ids, key=history.parent_time)


def pack_one(store: Store, objects: ObjectStore, history: History, commit_id: str, *, serial: bool) -> dict[str, int]:
    """Pack ``commit_id``'s pair (its parent against it) and drop its queue entry. A commit gone since (gc,
    damage) is dropped; any other failure leaves the entry for a later try."""
    result = {"chunks": 0, "bytes_saved": 0}
    try:
        result = packing.repack(store, objects, history, commit_id, max_commits=1, serial=serial)
    except (ObjectNotFoundError, CorruptObjectError) as exc:
        log.warning("packing after commit %s skipped: %s", commit_id[:12], exc)
    store.compare_and_swap(PENDING_PREFIX + commit_id, commit_id, None)
    return result


def drain(
    store: Store, objects: ObjectStore, history: History, *, serial: bool, stop: threading.Event | None = None
) -> dict[str, int]:
    """Pack every queued commit, oldest first (one pair in memory at a time); returns the summed result."""
    total = {"chunks": 0, "bytes_saved": 0, "commits": 0}
    for cid in pending_commits(store, history):
        if stop is not None and stop.is_set():
            break
        try:
            got = pack_one(store, objects, history, cid, serial=serial)
        except (CoralError, OSError) as exc:  # space optimisation only: leave it queued
            log.warning("packing after commit %s failed (left queued): %s", cid[:12], exc)
            continue
        total["chunks"] += got["chunks"]
        total["bytes_saved"] += got["bytes_saved"]
        total["commits"] += 1
    return total


class BackgroundPacker:
    """Drains the packing queue in one daemon thread at the lowest CPU priority, chunks one by one."""

    name = "packing"

    def __init__(self, store: Store, objects: ObjectStore, history: History) -> None:
        self.store = store
        self.objects = objects
        self.history = history
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._kicked = False
        self._stop = threading.Event()
        self.last_thread_id: int | None = None  # the thread that packed last (tests check it is not the caller's)
        self.totals: dict[str, Any] = {"chunks": 0, "bytes_saved": 0, "commits": 0}
        self._started = False  # this process queued a commit: only a writer hands the queue on at exit

    def enqueue(self, commit_id: str) -> None:
        """Queue ``commit_id`` durably and make sure the packer runs. The commit has landed already: a queue
        entry that cannot be written (disk full) leaves the pair unpacked (``coral repack`` packs it) rather
        than failing a save that succeeded."""
        try:
            mark_pending(self.store, commit_id)
        except (CoralError, OSError) as exc:
            log.warning("packing after commit %s not queued (run `coral repack` later): %s", commit_id[:12], exc)
            return
        self._started = True
        self.kick()

    def kick(self) -> None:
        """Start (or re-run) the packer on whatever is queued, this process's commits or another's."""
        with self._cond:
            if self._stop.is_set():
                return
            self._kicked = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coral-pack", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        lower_thread_priority()
        while True:
            with self._cond:
                if not self._kicked or self._stop.is_set():
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._kicked = False
            self.last_thread_id = threading.get_ident()
            try:
                got = drain(self.store, self.objects, self.history, serial=True, stop=self._stop)
                for k in self.totals:
                    self.totals[k] += got[k]
            except Exception as exc:  # noqa: BLE001 - never let packing take the process down
                log.warning("background packing failed (left queued): %s", exc)

    def pending(self) -> int:
        return len(self.store.list_refs(PENDING_PREFIX))

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._thread is None, timeout)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.wait(timeout)

    def detach(self, timeout: float | None = None) -> bool:
        """Stop after the pair in hand (up to ``timeout`` s) and hand what is still queued to a detached
        lowest-priority process that outlives this one (``pack_worker``). False where that cannot be done
        (a store that is not a local folder, or the process did not start): the queue then waits for the
        next writer or ``coral repack``, as before."""
        if not isinstance(self.store, LocalStore):
            return False
        self.stop(timeout)
        if not self._started:
            return True  # a reader: another process's queue waits for its next writer
        left = self.pending()
        if left == 0:
            return True
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "coral.version_control.pack_worker", str(self.store.root)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            log.info("packing of %d commit(s) left for the next write: %s", left, exc)
            return False
        log.info("packing of %d commit(s) goes on in a background process (pid %d)", left, proc.pid)
        return True
