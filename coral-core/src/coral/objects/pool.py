"""The one thread pool every object-layer job shares (writes, reads, mapped checks, repack).

Hashing, zstd, file I/O and fsync release the GIL, so threads keep every core and the disk busy; one
pool per ``ObjectStore`` bounds the threads however many jobs run at once.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class IOPool:
    """A fixed set of ``threads`` worker threads for the object layer's GIL-releasing work."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = cf.ThreadPoolExecutor(threads, thread_name_prefix="coral-io")

    def submit(self, fn: Callable[..., R], /, *args: Any) -> cf.Future[R]:
        """Run ``fn(*args)`` on a pool thread."""
        return self._executor.submit(fn, *args)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, run in the pool; re-raises the first failure."""
        return list(self._executor.map(fn, items))

    def shutdown(self) -> None:
        """Wait for queued work, then stop the threads."""
        self._executor.shutdown(wait=True)


def wait_all(futures: list[cf.Future[Any]]) -> None:
    """Wait for every future, then raise the first error (no task is left running behind the caller)."""
    cf.wait(futures)
    for f in futures:
        f.result()
