"""A Repository's background work (packing now, pushes later): one registry that ``wait()`` and exit drain.

Each kind of work is a ``BackgroundJob`` added with ``BackgroundWork.add``. Work is durable before it is
queued (e.g. a ``pack/pending/<id>`` ref), so abandoning it at exit loses nothing: the next writer resumes it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

EXIT_WAIT_ENV = "CORAL_EXIT_WAIT"
DEFAULT_EXIT_WAIT_S = 30.0
EXIT_DETACH_ENV = "CORAL_EXIT_DETACH"  # "0": exit waits for packing (up to CORAL_EXIT_WAIT) instead of detaching


class BackgroundJob(Protocol):
    """One kind of background work of a repository."""

    name: str

    def pending(self) -> int:
        """How many items wait (durably recorded ones included)."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this process's work is done; False when ``timeout`` ran out first."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Finish the item in hand, start no other (the rest stays queued for a later process)."""
        ...


class BackgroundWork:
    """The background jobs of one Repository, waited for together."""

    def __init__(self) -> None:
        self._jobs: dict[str, BackgroundJob] = {}
        self._lock = threading.Lock()
        _live.add(self)

    def add(self, job: BackgroundJob) -> None:
        """Register ``job`` under ``job.name`` (replacing an earlier one of that name)."""
        with self._lock:
            self._jobs[job.name] = job

    def jobs(self) -> list[BackgroundJob]:
        with self._lock:
            return list(self._jobs.values())

    def pending(self) -> dict[str, int]:
        """``{job name: items waiting}`` for every registered job."""
        return {job.name: job.pending() for job in self.jobs()}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job is done; False when ``timeout`` seconds ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.wait(left):
                return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop every job after the item in hand; what is left stays queued durably."""
        for job in self.jobs():
            job.stop(timeout)

    def close(self, timeout: float | None = None) -> None:
        """``stop`` and forget these jobs at exit: a closed repository's queue waits for its next writer."""
        self.stop(timeout)
        _live.discard(self)

    def detach(self, timeout: float | None = None) -> bool:
        """Hand every job's queue to a process that outlives this one (jobs with a ``detach`` method, e.g.
        packing); False, with nothing handed over, when some job cannot be."""
        jobs = self.jobs()
        if not all(callable(getattr(job, "detach", None)) for job in jobs):
            return False
        return all([job.detach(timeout) for job in jobs])  # type: ignore[attr-defined]


_live: weakref.WeakSet[BackgroundWork] = weakref.WeakSet()


_exit_limit: list[float] = []  # monotonic times set by limit_exit_wait; the earliest one counts


def limit_exit_wait(seconds: float) -> None:
    """Let process exit wait at most ``seconds`` from now for background work and pushes (a preemption's
    deadline: a process that must go must not hang past its grace window on a slow push)."""
    _exit_limit.append(time.monotonic() + max(0.0, seconds))


def clear_exit_wait_limit() -> None:
    """Forget every ``limit_exit_wait`` (for a process that goes on after a preemption, e.g. a test run)."""
    _exit_limit.clear()


def exit_wait_limit() -> float | None:
    """Seconds left before the limit set by ``limit_exit_wait``, or None when none was set."""
    if not _exit_limit:
        return None
    return max(0.0, min(_exit_limit) - time.monotonic())


def exit_wait_seconds() -> float:
    """How long process exit waits for background work (``CORAL_EXIT_WAIT``, default 30 s; less after a
    ``limit_exit_wait``)."""
    try:
        seconds = max(0.0, float(os.environ.get(EXIT_WAIT_ENV, DEFAULT_EXIT_WAIT_S)))
    except ValueError:
        seconds = DEFAULT_EXIT_WAIT_S
    limit = exit_wait_limit()
    return seconds if limit is None else min(seconds, limit)


@atexit.register
def _drain_at_exit() -> None:
    """Hand background work to a detached process where it can go on there (packing of a local repository);
    else give it a bounded time to finish, then stop it safely (it resumes on the next write)."""
    detach = os.environ.get(EXIT_DETACH_ENV, "1") != "0"
    deadline = time.monotonic() + exit_wait_seconds()
    for work in list(_live):
        try:
            limit = exit_wait_limit()
            if detach and work.detach(5.0 if limit is None else min(5.0, limit)):
                continue
            if not work.wait(max(0.0, deadline - time.monotonic())):
                log.info("Coral background work left for the next write (still pending: %s)", work.pending())
            limit = exit_wait_limit()  # after a preemption: the item in hand is left too (atomic, resumed later)
            work.stop(5.0 if limit is None else min(5.0, limit))
        except Exception as exc:  # pragma: no cover - the process is ending anyway
            log.warning("Coral background work at exit: %s", exc)
