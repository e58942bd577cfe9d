"""The store contract every backend implements (local disk, memory, S3, a third party's).

Objects are immutable bytes under a key; ``put`` is atomic (a reader sees all of an object or none).
Refs are small mutable strings changed only through ``compare_and_swap``, the one primitive that makes
concurrent writers safe on every backend.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..errors import InvalidNameError

_KEY = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


def validate_key(key: str, what: str = "key") -> str:
    """Refuse keys that could escape the store: absolute, ``..``, NUL, backslashes, odd characters."""
    if not isinstance(key, str) or not key or "\x00" in key or not _KEY.fullmatch(key):
        raise InvalidNameError(what, key, "use letters, digits, '.', '_', '-' and '/' separators only")
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidNameError(what, key, "'.' and '..' path components are not allowed")
    return key


class PendingPut:
    """An object written but not yet published: ``finish()`` makes it durable and visible, ``abort()`` drops it.

    Splitting a put in two lets a writer release the caller's buffers as soon as the bytes are copied
    out, and wait for the disk (fsync) later, overlapped with other work."""

    def __init__(self, stored: bool = False) -> None:
        self._stored = stored

    def finish(self) -> bool:
        """Publish the object; True when it was stored, False when it already existed."""
        return self._stored

    def abort(self) -> None:
        """Drop an unpublished object (nothing to do once ``finish`` ran)."""


class Store(ABC):
    """Abstract object store. Subclasses set ``scheme`` and implement the abstract methods.

    Required of every backend: atomic, immutable objects (``put``/``get``/``has``/``size``/``list``/
    ``delete``) and refs changed only by ``compare_and_swap`` (``get_ref``/``list_refs``).
    ``coral.testing.StoreContract`` checks all of it.

    A backend may lack the following; each default below is correct, only slower or weaker:

    - ``from_url``: raises NotImplementedError (the backend is then built in code, not from a URL).
    - range reads (``get_range``, ``get_into``): the default reads the whole object and slices it.
    - part writes (``put_parts``, ``begin_put_parts``): the default joins the parts and publishes at once.
    - ``open_file``: None, no files to map; ``load(mmap=True)`` then reads instead.
    - ``payload_check``: None, no integrity record of the backend's own (chunk ids still verify contents).
    - ``lock``: a no-op that is neither exclusive nor shared. A backend with real locks must make
      ``exclusive=False`` truly shared (writers hold it together) and ``exclusive=True`` exclude every
      other holder; one that cannot share may take every lock exclusively (correct, but writers then
      wait for each other). With the no-op, never run ``Repository.gc`` beside live writers.
    - staging records (``hold_staged``, ``release_staged``, ``staged_elsewhere``): record nothing; a
      commit then refuses chunks a concurrent gc removed instead of keeping them alive.
    - temp files (``temp_files``, ``remove_temp_files``): none to report or remove.
    - ``close``: nothing to release.
    """

    scheme: str = ""
    #: True for remote backends, where a ranged read of a few bytes costs far less than the whole object:
    #: a tensor packed with others is then read alone (its bytes only) instead of with its whole pack
    ranged_reads: bool = False

    @classmethod
    def from_url(cls, url: str) -> Store:
        """Build a store from a URL of this backend's scheme."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URL")

    # immutable objects
    @abstractmethod
    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = False) -> bool:
        """Store ``data`` atomically under ``key``; return False if it already existed (and was kept).

        ``overwrite=True`` replaces an existing object atomically (used by repack, which re-encodes an
        object without changing its decoded content, hence its id)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes of ``key``; raise ObjectNotFoundError when absent."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes from ``start`` (fewer at the end); backends may override to avoid a full read."""
        return self.get(key)[start : start + length]

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview], *, overwrite: bool = False) -> bool:
        """``put`` of the concatenated ``parts``; backends may override to write them without joining."""
        return self.put(key, b"".join(bytes(p) if not isinstance(p, bytes) else p for p in parts), overwrite=overwrite)

    def begin_put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> PendingPut:
        """Copy ``parts`` out now and publish them as ``key`` on ``finish()``; the buffers may change once it
        returns. The default publishes at once; the local store defers its fsync and rename."""
        return PendingPut(self.put_parts(key, parts))

    def get_into(self, key: str, start: int, out: memoryview) -> int:
        """Read up to ``len(out)`` bytes from ``start`` into ``out``; return the count (backends may avoid the copy)."""
        data = self.get_range(key, start, len(out))
        out[: len(data)] = data
        return len(data)

    def open_file(self, key: str) -> int | None:
        """A read-only file descriptor of the object's file, for memory mapping (the caller closes it);
        None when this backend keeps no files (the default). Raises ObjectNotFoundError when absent."""
        return None

    def payload_check(self, key: str, fd: int) -> Callable[[Sequence[bytes | memoryview]], None] | None:
        """For an object opened with ``open_file``: read the backend's own integrity record now, and return a
        function that checks the object's whole payload (given in parts) against it, raising
        ``CorruptObjectError``; None when the backend keeps no such record."""
        return None

    def temp_files(self) -> list[str]:
        """Leftover temp files of interrupted writes (crash leftovers no live writer holds), for ``fsck``.
        Backends without temp files keep this default: none."""
        return []

    def remove_temp_files(self) -> tuple[int, int]:
        """Delete the leftovers ``temp_files`` lists; returns (count, bytes). Called by ``gc`` under its
        exclusive lock. Backends without temp files keep this default: (0, 0)."""
        return 0, 0

    @abstractmethod
    def has(self, key: str) -> bool:
        """True when ``key`` exists."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Stored size in bytes of ``key``; raise ObjectNotFoundError when absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every object key that starts with ``prefix``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""

    # mutable refs
    @abstractmethod
    def get_ref(self, name: str) -> str | None:
        """Current value of a ref, or None."""

    @abstractmethod
    def compare_and_swap(self, name: str, expected: str | None, new: str | None) -> bool:
        """Set ref ``name`` to ``new`` only if it currently equals ``expected`` (None: absent).

        ``new=None`` deletes the ref. Returns True on success, False when another writer got there first.
        """

    @abstractmethod
    def list_refs(self, prefix: str = "") -> dict[str, str]:
        """Every ref whose name starts with ``prefix``, with its value."""

    # coordination
    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool = True, timeout: float = 600.0) -> Iterator[None]:
        """A named lock across every process using this store: ``exclusive=False`` holders share it (writers),
        an ``exclusive=True`` holder excludes all others (gc); LockTimeoutError after ``timeout`` seconds.
        Not re-entrant. The default is a no-op (see the class docstring)."""
        yield

    # staged chunks (written, not yet committed) that a gc in another process must keep
    def hold_staged(self, token: str, chunk_ids: Iterable[str]) -> None:
        """Record the chunks ``token`` (one Repository) has staged, replacing its earlier record, so that a
        gc in another process keeps them until ``release_staged`` or until this process dies. Called under
        the shared gc lock. The default records nothing (a commit then refuses chunks a gc removed)."""

    def release_staged(self, token: str) -> None:
        """Drop the record of ``hold_staged`` (after the commit, or when the staged tensors are discarded)."""

    def staged_elsewhere(self) -> set[str]:
        """Chunk ids that live writers hold as staged (gc treats them as live)."""
        return set()

    def close(self) -> None:
        """Release resources; the default has none."""

    def describe(self) -> str:
        return f"{self.scheme}://"
