"""Files that appear whole or not at all: write a uniquely named temp file, fsync it, rename it into place,
fsync the folder.

Two writers of one path never share a temp file (its name holds the process, the thread and a counter,
and it is created exclusively), so both succeed and the path ends as one of the two complete files. A
crash at any instant leaves the old file (or none) and at most a stray temp file; a failed write removes
its temp file. Used by the local store (objects and refs), safetensors export, HF folder writes and
``TrainingState.save``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
_counter = itertools.count()

Parts = Sequence[bytes | bytearray | memoryview]


def temp_file(folder: str | os.PathLike[str], prefix: str, suffix: str = "", mode: int = 0o600) -> tuple[int, str]:
    """A new, exclusively created file in ``folder`` (like ``mkstemp``, without its random-name machinery);
    returns (fd, path). ``mode`` is filtered by the umask, as for any new file."""
    while True:
        path = f"{os.fspath(folder)}/{prefix}{os.getpid()}-{threading.get_ident()}-{next(_counter)}{suffix}"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), path
        except FileExistsError:  # a dead process with a recycled pid left it: take the next name
            continue


def write_all(fd: int, parts: Parts) -> None:
    """Write every byte of ``parts`` to ``fd`` at its position (unbuffered writes may be partial)."""
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, making the names created, renamed or removed in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(fd: int, tmp: str) -> None:
    """Remove an unpublished temp file and close it (errors ignored: this runs on a failure path)."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    with contextlib.suppress(OSError):
        os.close(fd)


def publish(
    fd: int, tmp: str, target: str | os.PathLike[str], *, fsync: bool = True, strict_folder: bool = True
) -> None:
    """fsync the temp file, rename it to ``target``, close it and fsync the folder: durable, then visible.

    On a failure before the rename the temp file is removed and the error re-raised. A folder fsync that
    fails raises too, unless ``strict_folder=False`` (files outside a store: some network and FUSE file
    systems refuse to fsync folders), where it is logged."""
    try:
        if fsync:
            os.fsync(fd)
        os.replace(tmp, target)
    except BaseException:
        discard(fd, tmp)
        raise
    os.close(fd)
    if fsync:
        folder = os.path.dirname(os.fspath(target)) or "."
        try:
            fsync_dir(folder)
        except OSError as exc:
            if strict_folder:
                raise
            log.debug("could not fsync folder %s: %s", folder, exc)


def _temp_beside(target: Path) -> tuple[int, str]:
    """A temp file in ``target``'s folder (so the rename stays on one filesystem), mode 0666 less the umask."""
    return temp_file(target.parent, f".{target.name}.", ".tmp", 0o666)


def atomic_write(
    path: str | os.PathLike[str], data: bytes | bytearray | memoryview | str, *, fsync: bool = True
) -> Path:
    """Replace ``path`` with ``data`` (str is written as UTF-8) atomically and durably; returns the path."""
    target = Path(path)
    parts = [data.encode("utf-8") if isinstance(data, str) else data]
    fd, tmp = _temp_beside(target)
    try:
        write_all(fd, parts)
    except BaseException:
        discard(fd, tmp)
        raise
    publish(fd, tmp, target, fsync=fsync, strict_folder=False)
    return target


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block ends
    without an error, and is removed when it raises."""
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            yield fh
    except BaseException:
        discard(fd, tmp)
        raise
    publish(fd, tmp, target, fsync=fsync, strict_folder=False)
