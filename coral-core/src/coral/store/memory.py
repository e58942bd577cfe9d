"""An in-memory store: fast, process-local, for tests and scratch repositories (``memory://name``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import ClassVar

from ..errors import LockTimeoutError, ObjectNotFoundError
from .base import Store, validate_key


class _SharedLock:
    """Any number of shared holders or one exclusive holder; no preference between the two kinds."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False

    def acquire(self, exclusive: bool, timeout: float) -> bool:
        with self._cond:
            if exclusive:
                free = self._cond.wait_for(lambda: not self._exclusive and not self._shared, timeout)
            else:
                free = self._cond.wait_for(lambda: not self._exclusive, timeout)
            if not free:
                return False
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
            return True

    def release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._cond.notify_all()


class MemoryStore(Store):
    """Objects and refs in dicts. Stores opened with the same ``memory://name`` share their contents."""

    scheme = "memory"
    _named: ClassVar[dict[str, MemoryStore]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._refs: dict[str, str] = {}
        self._mutex = threading.RLock()
        self._locks: dict[str, _SharedLock] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        name = url.split("://", 1)[1] if "://" in url else url
        with cls._named_lock:
            if name not in cls._named:
                cls._named[name] = cls()
            return cls._named[name]

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = False) -> bool:
        validate_key(key)
        with self._mutex:
            if key in self._objects and not overwrite:
                return False
            self._objects[key] = bytes(data)
            return True

    def get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError(f"object {key!r} not found in memory store") from None

    def has(self, key: str) -> bool:
        return key in self._objects

    def size(self, key: str) -> int:
        return len(self.get(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._mutex:
            keys = [k for k in self._objects if k.startswith(prefix)]
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        with self._mutex:
            self._objects.pop(key, None)

    def get_ref(self, name: str) -> str | None:
        return self._refs.get(name)

    def compare_and_swap(self, name: str, expected: str | None, new: str | None) -> bool:
        validate_key(name, "ref")
        with self._mutex:
            if self._refs.get(name) != expected:
                return False
            if new is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = new
            return True

    def list_refs(self, prefix: str = "") -> dict[str, str]:
        with self._mutex:
            return {k: v for k, v in sorted(self._refs.items()) if k.startswith(prefix)}

    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool = True, timeout: float = 600.0) -> Iterator[None]:
        """Shared holders together, or one exclusive holder, like ``flock`` (and like it, not re-entrant)."""
        with self._mutex:
            lk = self._locks.setdefault(name, _SharedLock())
        if not lk.acquire(exclusive, max(0.0, timeout)):
            raise LockTimeoutError(f"could not take lock {name!r} on memory store in {timeout}s")
        try:
            yield
        finally:
            lk.release(exclusive)

    def describe(self) -> str:
        return "memory://"
