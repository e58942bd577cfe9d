"""coral.store.atomicfile: a file appears whole or not at all, and concurrent writers never collide."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from coral.store import atomic_open, atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_an_error_inside_atomic_open_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_new_files_get_a_normal_files_mode_under_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_concurrent_writers_of_one_path_all_succeed_and_one_whole_content_wins(tmp_path):
    path = tmp_path / "f"
    contents = [bytes([65 + i]) * 300_000 for i in range(6)]
    barrier = threading.Barrier(len(contents))
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            barrier.wait()
            atomic_write(path, data)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert path.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
