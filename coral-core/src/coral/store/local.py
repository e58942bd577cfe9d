"""The local-filesystem store: one file per object, written to a temp file, fsynced, renamed into place.

A process killed at any instant leaves at most a stray temp file (removed by ``gc``), never a partial
object or ref. Refs change under an ``flock`` with an atomic rename, so compare-and-swap holds across
processes. Every object file ends with an integrity seal (``seal``); the temp-write-fsync-rename steps
are ``atomicfile``'s.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import (
    CoralError,
    CorruptObjectError,
    InsufficientSpaceError,
    LockTimeoutError,
    ObjectNotFoundError,
    RefExistsError,
)
from . import atomicfile
from . import seal as _seal
from .base import PendingPut, Store, validate_key

log = logging.getLogger(__name__)

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _object_name(key: str) -> str:
    """How errors name an object: ``chunks/ab/cdef...`` is reported as its id ``abcdef...``."""
    parts = key.split("/")
    return parts[1] + parts[2] if len(parts) == 3 and len(parts[1]) == 2 else key


def _raise_if_no_space(exc: OSError, target: Path, root: Path) -> None:
    """ENOSPC, EDQUOT and EFBIG (a file-size limit) become InsufficientSpaceError; other errors pass."""
    if exc.errno in _SPACE_ERRNOS:
        msg = f"disk full writing {target.name} under {root}: {exc.strerror}"
        raise InsufficientSpaceError(msg) from exc


def _check_payload(key: str, found: _seal.Seal, parts: Sequence[bytes | memoryview]) -> None:
    """Raise CorruptObjectError unless ``parts`` (the whole payload) matches the object's seal."""
    if sum(memoryview(p).nbytes for p in parts) != found.length:
        raise CorruptObjectError(_object_name(key), "integrity seal is damaged (truncated, extended or edited)")
    if not found.matches(parts):
        raise CorruptObjectError(_object_name(key), "stored bytes fail their integrity check (bit rot or edits)")


_CHUNK_KEY = re.compile(r"chunks/[0-9a-f]{2}/[0-9a-f]{62}")


class _LocalPendingPut(PendingPut):
    """A sealed temp file, written and flock-ed, waiting for its fsync and rename."""

    def __init__(self, store: LocalStore, fd: int, tmp: str, target: Path) -> None:
        super().__init__(True)
        self._args: tuple[LocalStore, int, str, Path] | None = (store, fd, tmp, target)
        self._lock = threading.Lock()

    def finish(self) -> bool:
        with self._lock:
            args, self._args = self._args, None
        if args is not None:
            store, fd, tmp, target = args
            store._publish(fd, tmp, target)
        return True

    def abort(self) -> None:
        with self._lock:
            args, self._args = self._args, None
        if args is not None:
            atomicfile.discard(args[1], args[2])


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
        self._real_root = os.path.realpath(self.root)
        for d in (self._objects, self._refs, self._tmp, self._locks):
            self._inside(d / "x")
        self._held: dict[str, tuple[int, Path]] = {}  # token -> (locked fd, path) of a staging record
        self._object_dirs: set[Path] = set()  # object folders known to exist inside the store

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        path = url.removeprefix("file://")
        return cls(path)

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, base: Path, key: str, what: str) -> Path:
        return base.joinpath(*validate_key(key, what).split("/"))

    def _inside(self, path: Path) -> Path:
        """Refuse a path whose folder really lies outside the store: a symlink planted in a repository from
        someone else must never make Coral write, delete or read elsewhere."""
        real = os.path.realpath(path.parent)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            where = str(path.relative_to(self.root))
            raise CorruptObjectError(where, f"resolves outside the repository, to {real} (planted symlink?)")
        return path

    def _write_atomic(
        self, target: Path, data: bytes | memoryview | Sequence[bytes | memoryview], *, seal: bool = False
    ) -> None:
        fd, tmp = self._write_temp(target, data, seal=seal)
        self._publish(fd, tmp, target)

    def _write_temp(
        self, target: Path, data: bytes | memoryview | Sequence[bytes | memoryview], *, seal: bool = False
    ) -> tuple[int, str]:
        """Write ``data`` (plus the seal) to a new temp file, held flock-ed; returns (fd, temp path)."""
        parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        if seal:
            parts.append(_seal.make(parts))
        # object folders are never removed, so one that was checked and made stays good: skip the syscalls
        ready = seal and target.parent in self._object_dirs
        if not ready:
            self._inside(target)
        while True:
            try:
                if not ready:
                    self._make_dirs(target.parent)
                    if seal:
                        self._object_dirs.add(target.parent)
                fd, tmp = atomicfile.temp_file(self._tmp, ".put-", mode=0o666)
            except OSError as exc:
                _raise_if_no_space(exc, target, self.root)
                raise
            # held until the rename: gc removes only temp files no live writer holds (crash leftovers)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                break
            os.close(fd)  # a gc took it between mkstemp and flock: use another
        try:
            atomicfile.write_all(fd, parts)
        except BaseException as exc:
            atomicfile.discard(fd, tmp)
            if isinstance(exc, OSError):
                _raise_if_no_space(exc, target, self.root)
            raise
        return fd, tmp

    def _publish(self, fd: int, tmp: str, target: Path) -> None:
        """fsync the temp file, rename it to ``target`` and fsync the folder: durable, then visible."""
        try:
            atomicfile.publish(fd, tmp, target, fsync=self.fsync)
        except OSError as exc:
            _raise_if_no_space(exc, target, self.root)
            raise

    def _make_dirs(self, folder: Path) -> None:
        """``mkdir -p`` whose new folders are durable too: each created folder's parent is fsynced, so a
        crash cannot drop a folder whose fsynced files a commit already names."""
        missing = []
        cur = folder
        while not cur.is_dir() and cur != self.root and self.root in cur.parents:
            missing.append(cur)
            cur = cur.parent
        folder.mkdir(parents=True, exist_ok=True)
        for fanned in (self._objects / "chunks", self._objects / "commits"):
            if fanned in missing:  # all 256 fan-out folders at once: later saves never pay a new folder's fsync
                for i in range(256):
                    (fanned / f"{i:02x}").mkdir(exist_ok=True)
                missing.extend(fanned / f"{i:02x}" for i in range(256))
        if self.fsync:
            for parent in dict.fromkeys(made.parent for made in reversed(missing)):
                atomicfile.fsync_dir(parent)

    # objects
    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = False) -> bool:
        target = self._path(self._objects, key, "object key")
        if not overwrite and target.exists():
            return False
        self._write_atomic(target, data, seal=True)
        return True

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview], *, overwrite: bool = False) -> bool:
        target = self._path(self._objects, key, "object key")
        if not overwrite and target.exists():
            return False
        self._write_atomic(target, list(parts), seal=True)
        return True

    def begin_put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> PendingPut:
        """Write the temp file now; ``finish()`` fsyncs and renames it (the slow part, run in parallel)."""
        target = self._path(self._objects, key, "object key")
        if target.exists():
            return PendingPut(False)
        fd, tmp = self._write_temp(target, list(parts), seal=True)
        return _LocalPendingPut(self, fd, tmp, target)

    def get_into(self, key: str, start: int, out: memoryview) -> int:
        try:
            fd = os.open(self._path(self._objects, key, "object key"), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None
        try:
            found = _seal.read(fd, _object_name(key))
            view, done = memoryview(out).cast("B"), 0
            want = max(0, min(len(view), found.length - start))
            while done < want:
                n = os.preadv(fd, [view[done:want]], start + done)
                if n <= 0:
                    break
                done += n
            # the read reaches the end: check the whole seal (a word sum only where its words line up)
            if start + done == found.length and (found.version != 1 or start % 8 == 0):
                _check_payload(key, found, [os.pread(fd, start, 0), view[:done]])
            return done
        finally:
            os.close(fd)

    def open_file(self, key: str) -> int | None:
        try:
            return os.open(self._path(self._objects, key, "object key"), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None

    def payload_check(self, key: str, fd: int) -> Callable[[Sequence[bytes | memoryview]], None] | None:
        found = _seal.read(fd, _object_name(key))

        def check(parts: Sequence[bytes | memoryview]) -> None:
            _check_payload(key, found, parts)

        return check

    def get(self, key: str) -> bytes:
        try:
            fh = open(self._path(self._objects, key, "object key"), "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None
        with fh:
            found = _seal.read(fh.fileno(), _object_name(key))
            data = fh.read(found.length)
        _check_payload(key, found, [data])
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            fh = open(self._path(self._objects, key, "object key"), "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.root}") from None
        with fh:
            payload = _seal.read(fh.fileno(), _object_name(key)).length  # a ranged read checks the length only
            fh.seek(start)
            return fh.read(max(0, min(length, payload - start)))

    def has(self, key: str) -> bool:
        if _CHUNK_KEY.fullmatch(key):  # the common case, asked once per chunk per save: skip pathlib
            return os.path.isfile(f"{self._objects}/{key}")
        return self._path(self._objects, key, "object key").is_file()

    def size(self, key: str) -> int:
        try:
            return max(0, self._path(self._objects, key, "object key").stat().st_size - _seal.SIZE)
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
            self._inside(self._path(self._objects, key, "object key")).unlink()

    # refs
    def get_ref(self, name: str) -> str | None:
        try:
            # undecodable bytes become U+FFFD: a damaged ref then fails id validation with a clear message
            fd = os.open(self._inside(self._path(self._refs, name, "ref")), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:  # ELOOP: the ref file is a symlink, which Coral never creates
            raise CorruptObjectError(f"ref {name}", f"cannot be read safely: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # "heads/a" is a folder when only "a/..." branches exist
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")

    def compare_and_swap(self, name: str, expected: str | None, new: str | None) -> bool:
        path = self._inside(self._path(self._refs, name, "ref"))
        with self.lock("refs"):
            if self.get_ref(name) != expected:
                return False
            if new is None:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    path.unlink()
                    if self.fsync:
                        atomicfile.fsync_dir(path.parent)
            else:
                if path.is_dir():  # an empty folder left behind by deleted "name/..." refs
                    with contextlib.suppress(OSError):
                        path.rmdir()
                try:
                    self._write_atomic(path, new.encode("utf-8"))
                except (IsADirectoryError, NotADirectoryError, FileExistsError):
                    raise RefExistsError(
                        f"ref {name!r} clashes with an existing ref: 'x' and 'x/...' cannot both exist"
                    ) from None
            return True

    def list_refs(self, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for dirpath, _dirs, files in os.walk(self._refs):
            rel = Path(dirpath).relative_to(self._refs).as_posix()
            for f in files:
                name = f if rel == "." else f"{rel}/{f}"
                if name.startswith(prefix):
                    try:
                        value = self.get_ref(name)
                    except CoralError as exc:  # a file no Coral writes (odd name, planted symlink)
                        log.warning("ignoring unreadable ref file %r: %s", name, exc)
                        continue
                    if value is not None:
                        out[name] = value
        return dict(sorted(out.items()))

    # coordination
    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool = True, timeout: float = 600.0) -> Iterator[None]:
        path = self._inside(self._locks / f"{validate_key(name, 'lock')}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptObjectError(f"lock {name}", "the lock file is a symlink (planted?)") from None
            raise
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

    # staging records: ``tmp/.staged-*`` files listing chunk ids, flock-ed by their live writer
    def hold_staged(self, token: str, chunk_ids: Iterable[str]) -> None:
        held = self._held.get(token)
        if held is None:
            while True:
                try:
                    fd, name = atomicfile.temp_file(self._tmp, ".staged-")
                except OSError as exc:
                    _raise_if_no_space(exc, self._tmp / ".staged", self.root)
                    raise
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink:
                    break
                os.close(fd)  # a gc took it between mkstemp and flock
            held = self._held[token] = (fd, Path(name))
        data = "\n".join(sorted(set(chunk_ids))).encode()
        try:
            os.ftruncate(held[0], 0)
            if os.pwrite(held[0], data, 0) != len(data):
                raise OSError(errno.ENOSPC, "short write of the staging record")
        except OSError as exc:
            _raise_if_no_space(exc, held[1], self.root)
            raise

    def release_staged(self, token: str) -> None:
        held = self._held.pop(token, None)
        if held is not None:
            held[1].unlink(missing_ok=True)
            os.close(held[0])

    def staged_elsewhere(self) -> set[str]:
        ids: set[str] = set()
        for p in self._tmp.glob(".staged-*"):
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # got it: the writer is gone, nothing to keep
            except BlockingIOError:
                with open(fd, "rb", closefd=False) as fh:
                    ids.update(fh.read().decode("ascii", "replace").split())
            finally:
                os.close(fd)
        return ids

    def close(self) -> None:
        for token in list(self._held):
            self.release_staged(token)

    def temp_files(self) -> builtins.list[Path]:
        """Leftover temp files of interrupted writes and staging records of dead processes (unlocked)."""
        return [p for p, _size in self._stale_temp_files(remove=False)]

    def remove_temp_files(self) -> tuple[int, int]:
        """Delete the leftover temp files (each while holding its lock); returns (count, bytes)."""
        found = self._stale_temp_files(remove=True)
        return len(found), sum(size for _p, size in found)

    def _stale_temp_files(self, remove: bool) -> builtins.list[tuple[Path, int]]:
        out = []
        for p in self._tmp.iterdir():
            if not p.name.startswith((".put-", ".staged-")):
                continue
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                size = os.fstat(fd).st_size
                if remove:
                    p.unlink(missing_ok=True)  # under the lock: a writer that locks it next sees nlink == 0
                out.append((p, size))
            except BlockingIOError:
                continue  # a live writer is using it
            finally:
                os.close(fd)
        return out
