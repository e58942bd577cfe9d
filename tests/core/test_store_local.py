"""LocalStore specifics: the on-disk layout, disk-full handling, and a writer killed mid-save."""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from coral import Repository
from coral.errors import InsufficientSpaceError
from coral.objects import chunk_key
from coral.store import LocalStore, atomicfile, local


def test_on_disk_layout(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": np.arange(10, dtype=np.float32)})
        h = repo.commit("layout")
        repo.tag_version("v1")
        cid = repo.get_commit(h).tree["w"].chunks[0]
    root = tmp_path / ".coral"
    assert (root / "objects" / "chunks" / cid[:2] / cid[2:]).is_file()
    assert (root / "objects" / "commits" / h[:2] / h[2:]).is_file()
    assert (root / "refs" / "heads" / "main").read_text() == h
    assert (root / "refs" / "HEAD").read_text() == "ref: heads/main"
    assert '"commit":"' + h in (root / "refs" / "tags" / "v1").read_text()
    assert chunk_key(cid) == f"chunks/{cid[:2]}/{cid[2:]}"
    assert list((root / "tmp").iterdir()) == []


def test_disk_full_raises_insufficient_space_and_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "s")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local.os, "replace", full)
    with pytest.raises(InsufficientSpaceError, match="(?i)space"):
        store.put("chunks/aa/bb", b"x" * 1000)
    with pytest.raises(InsufficientSpaceError):
        store.compare_and_swap("heads/main", None, "c1")
    monkeypatch.undo()
    assert not store.has("chunks/aa/bb") and store.get_ref("heads/main") is None
    assert store.temp_files() == []


def test_a_pending_object_is_invisible_until_finished_and_abort_leaves_nothing(tmp_path):
    store = LocalStore(tmp_path / "s")
    pending = store.begin_put_parts("chunks/aa/bb", [b"x" * 1000])
    assert not store.has("chunks/aa/bb")  # written to a temp file, not yet renamed: no reader can see it
    assert len(list((store.root / "tmp").glob(".put-*"))) == 1
    assert store.temp_files() == [] and store.remove_temp_files() == (0, 0)  # held by a live writer: kept
    assert pending.finish() is True and store.get("chunks/aa/bb") == b"x" * 1000
    assert pending.finish() is True  # finishing twice is harmless
    dropped = store.begin_put_parts("chunks/aa/cc", [b"y" * 1000])
    dropped.abort()
    assert not store.has("chunks/aa/cc") and store.temp_files() == []


def test_a_failed_publish_leaves_the_branch_where_it_was(tmp_path, monkeypatch):
    """commit_weights writes the commit while chunks are still being fsynced: a chunk that fails to land
    must not leave a commit that names it, nor a temp file."""
    w = np.random.default_rng(3).standard_normal(3 * (1 << 20)).astype(np.float32)  # three chunks
    with Repository(tmp_path, init=True) as repo:
        first = repo.commit_weights({"w": np.zeros(8, np.float32)}, "first")
        real = local.os.replace

        def failing(src, dst):
            if "/chunks/" in str(dst):
                raise OSError(errno.EIO, "simulated I/O error")
            return real(src, dst)

        monkeypatch.setattr(local.os, "replace", failing)
        with pytest.raises(OSError, match="simulated"):
            repo.commit_weights({"w": w}, "second")
        monkeypatch.undo()
        assert repo.head_commit() == first
        assert repo.store.temp_files() == []
        assert repo.fsck()["ok"]
        second = repo.commit_weights({"w": w}, "second")  # and it works once the disk does
        assert repo.load_arrays(second)["w"].tobytes() == w.tobytes()


def test_saves_beyond_the_publish_queue_bound_finish_inline(tmp_path, monkeypatch):
    from coral.objects import writer

    monkeypatch.setattr(writer, "MAX_PUBLISHING", 1)
    state = {f"w{i}": np.full(300_000, i, np.float32) for i in range(12)}  # 12 chunks, one queue slot
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights(state, "many")
        assert repo.store.temp_files() == []
        loaded = repo.load_arrays(cid)
        assert all(loaded[k].tobytes() == v.tobytes() for k, v in state.items())
        assert repo.fsck()["ok"]


_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from coral import Repository
    repo = Repository(sys.argv[1])
    for i in range(1000):
        w = np.random.default_rng(i).standard_normal(1 << 21).astype(np.float32)  # 8 MiB, two chunks
        repo.stage_weights({"w": w, "step": np.array(i)})
        print(repo.commit(f"step {i}"), flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_killed_save_leaves_previous_commits_loadable(tmp_path, delay):
    path = tmp_path / "repo"
    Repository(path, init=True).close()
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
    reported = [proc.stdout.readline().strip() for _ in range(2)]
    time.sleep(delay + random.random() * 0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    proc.stdout.close()
    assert all(len(h) == 64 for h in reported)

    with Repository(path) as repo:
        log = repo.log()
        hashes = [c.hash for c in log]
        assert set(reported) <= set(hashes)
        for info in log:
            i = int(info.message.split()[1])
            w = repo.load_arrays(info.hash)
            assert (
                w["w"].tobytes()
                == np.random.default_rng(i).standard_normal(1 << 21).astype(np.float32).tobytes()
            )
            assert int(w["step"]) == i
        report = repo.fsck()
        assert report["ok"], report["errors"]
        repo.gc()
        after = repo.fsck()
        assert after["ok"] and after["temp_files"] == 0 and after["unreferenced_objects"] == 0
        assert [c.hash for c in repo.log()] == hashes


def test_new_object_folders_are_fsynced_into_their_parents(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "s")
    synced: list[str] = []
    real = atomicfile.fsync_dir
    monkeypatch.setattr(atomicfile, "fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    store.put("chunks/ab/cdef", b"x")
    objects = tmp_path / "s" / "objects"
    # the object's folder (its entry), the new "ab" folder (in "chunks") and the new "chunks" folder
    assert {str(objects / "chunks" / "ab"), str(objects / "chunks"), str(objects)} <= set(synced)
    synced.clear()
    store.put("chunks/ab/0123", b"y")  # the folders exist now: only the object's own folder is synced
    assert synced == [str(objects / "chunks" / "ab")]


def test_stored_files_follow_the_umask_so_a_team_can_share_a_repository(tmp_path) -> None:
    """Objects and refs are created 0666 filtered by the umask (like git's), not owner-only."""
    old = os.umask(0o022)
    try:
        repo = Repository(tmp_path / "r", init=True)
        repo.commit_weights({"w": np.arange(8, dtype=np.float32)}, message="one")
    finally:
        os.umask(old)
    root = tmp_path / "r" / ".coral"
    files = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, (p, oct(p.stat().st_mode))
