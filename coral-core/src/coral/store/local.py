"""The local-filesystem store: one file per object, written to a temp file, fsynced, renamed into place.

A process killed at any instant leaves at most a stray temp file (removed by ``gc``), never a partial
object or ref. Refs change under an ``flock`` with an atomic rename, so compare-and-swap holds across
processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..errors import InsufficientSpaceError, LockTimeoutError, ObjectNotFoundError
from .base import Store, validate_key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    """Objects under ``root/objects``, refs under ``root/refs``, temp files under ``root/tmp``."""

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._objects = self.root / "objects"
        self._refs = self.root / "refs"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        for d in (self._objects, self._refs, self._tmp, self._locks):
            d.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(cls, url: str) -> "LocalStore":
        path = url[len("file://") :] if url.startswith("file://") else url
        return cls(path)

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, base: Path, key: str, what: str) -> Path:
        return base.joinpath(*validate_key(key, what).split("/"))

    def _write_atomic(self, target: Path, data: bytes | memoryview) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientSpaceError(f"disk full while writing {target.name} under {self.root}") from exc
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.fsync:
            _fsync_dir(target.parent)

    # objects
    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = False) -> bool:
        target = self._path(self._objects, key, "object key")
        if not overwrite and target.exists():
            return False
        self._write_atomic(target, data)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(self._objects, key, "object key").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(self._objects, key, "object key"), "rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None

    def has(self, key: str) -> bool:
        return self._path(self._objects, key, "object key").is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(self._objects, key, "object key").stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None

    def list(self, prefix: str = "") -> Iterator[str]:
        for dirpath, _dirs, files in os.walk(self._objects):
            rel = Path(dirpath).relative_to(self._objects).as_posix()
            for f in files:
                key = f if rel == "." else f"{rel}/{f}"
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(self._objects, key, "object key").unlink()

    # refs
    def get_ref(self, name: str) -> str | None:
        try:
            return self._path(self._refs, name, "ref").read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def compare_and_swap(self, name: str, expected: str | None, new: str | None) -> bool:
        path = self._path(self._refs, name, "ref")
        with self.lock("refs"):
            if self.get_ref(name) != expected:
                return False
            if new is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    if self.fsync:
                        _fsync_dir(path.parent)
            else:
                self._write_atomic(path, new.encode("utf-8"))
            return True

    def list_refs(self, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for dirpath, _dirs, files in os.walk(self._refs):
            rel = Path(dirpath).relative_to(self._refs).as_posix()
            for f in files:
                name = f if rel == "." else f"{rel}/{f}"
                if name.startswith(prefix):
                    value = self.get_ref(name)
                    if value is not None:
                        out[name] = value
        return dict(sorted(out.items()))

    # coordination
    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool = True, timeout: float = 600.0) -> Iterator[None]:
        path = self._locks / f"{validate_key(name, 'lock')}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeoutError(f"could not take lock {name!r} on {self.root} in {timeout}s") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def temp_files(self) -> list[Path]:
        """Leftover temp files of interrupted writes (gc removes them)."""
        return [p for p in self._tmp.iterdir() if p.is_file()]
