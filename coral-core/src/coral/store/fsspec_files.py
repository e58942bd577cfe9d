"""Byte files under one root of an fsspec filesystem, with the few conditional operations Coral needs.

``FsspecFiles`` is what the fsspec store and its lease locks write through. On a generic filesystem an
exclusive create uses ``open(..., "xb")``; a replace compares then writes, so callers serialise replaces
with a lease. ``S3Files`` (``s3_files.py``) makes both true conditional writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple


class Versioned(NamedTuple):
    """A file's bytes and the token (ETag, content hash) a conditional replace must match."""

    data: bytes
    token: str


class FsspecFiles:
    """Files named by ``/``-separated keys under ``root`` of ``fs`` (an ``fsspec.AbstractFileSystem``)."""

    #: True when ``replace_if`` is atomic on the server (a real compare-and-swap)
    atomic_replace: bool = False

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        from fsspec.implementations.local import LocalFileSystem

        self._local = isinstance(fs, LocalFileSystem)
        self._exclusive: bool | None = None  # does open(..., "xb") refuse an existing file? (checked once)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def key_of(self, path: str) -> str:
        path = path.rstrip("/")
        root = self.root.lstrip("/")
        bare = path.lstrip("/")
        return bare[len(root) + 1 :] if root else bare

    @property
    def atomic_create(self) -> bool:
        """True when ``create_only`` cannot let two creators both win (False once ``"xb"`` was refused)."""
        return self._local or self._exclusive is not False

    # ---- plain operations ----------------------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        """The file's bytes; FileNotFoundError when absent."""
        return self.fs.cat_file(self.path(key))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start``; FileNotFoundError when absent."""
        if length <= 0:
            self.size(key)  # still raises for a missing file
            return b""
        size = self.size(key)
        if start >= size:
            return b""
        return self.fs.cat_file(self.path(key), start=start, end=min(size, start + length))

    def size(self, key: str) -> int:
        return int(self.fs.info(self.path(key))["size"])

    def exists(self, key: str) -> bool:
        try:
            self.fs.info(self.path(key))
        except FileNotFoundError:
            return False
        return True

    def write(self, key: str, data: bytes) -> None:
        """Replace or create the file atomically (a reader sees the old bytes or the new, never a mix)."""
        path = self.path(key)
        if self._local:
            tmp = self.path(f"tmp/.put-{uuid.uuid4().hex}")
            self.fs.makedirs(os.path.dirname(tmp), exist_ok=True)
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        self.fs.pipe_file(path, data)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (the listing starts at its last ``/``)."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.path(folder) if folder else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for p in sorted(found):
            key = self.key_of(p)
            if key.startswith(prefix):
                yield key

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """The bytes of several files at once (concurrently where the filesystem can); absent ones left out."""
        if not keys:
            return {}
        got = self.fs.cat([self.path(k) for k in keys], on_error="return")
        out: dict[str, bytes] = {}
        for p, v in got.items():
            if isinstance(v, BaseException):
                if isinstance(v, FileNotFoundError):  # deleted since it was listed
                    continue
                raise v
            out[self.key_of(p)] = v
        return out

    # ---- conditional operations ----------------------------------------------------------------------------
    def read_versioned(self, key: str) -> Versioned | None:
        """The file's bytes with its token, or None when absent."""
        try:
            data = self.read(key)
        except FileNotFoundError:
            return None
        return Versioned(data, hashlib.md5(data, usedforsecurity=False).hexdigest())

    def create_only(self, key: str, data: bytes) -> str | None:
        """Create the file only if absent; its new token, or None when it already existed."""
        path = self.path(key)
        if self._local:  # written aside, then hard-linked: the file appears whole, or not at all
            tmp = self.path(f"tmp/.put-{uuid.uuid4().hex}")
            self.fs.makedirs(os.path.dirname(tmp), exist_ok=True)
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return None
            finally:
                os.unlink(tmp)
        elif self._exclusive is not False:
            try:
                with self.fs.open(path, "xb") as fh:
                    fh.write(data)
            except FileExistsError:
                return None
            except (ValueError, NotImplementedError, TypeError):  # this filesystem has no exclusive mode
                self._exclusive = False
                return self.create_only(key, data)
        else:
            if self.exists(key):
                return None
            self.write(key, data)
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        """Replace the file only if its token is still ``token``; the new token, or None when it changed.
        Not atomic here (compare, then write): callers hold a lease."""
        cur = self.read_versioned(key)
        if cur is None or cur.token != token:
            return None
        self.write(key, data)
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def describe(self) -> str:
        proto = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{proto}://{self.root.lstrip('/') if proto != 'file' else self.root}"

    def close(self) -> None:
        """Release connections (nothing to do for most filesystems)."""
