"""Remotes against real folder repositories: add/list/remove, fetch, push, pull, clone (with depth), the push
safety rules, bytes sent, resume of an interrupted transfer, bad input, fsck --remote and repair."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from coral import Repository
from coral.errors import (
    CorruptObjectError,
    DivergedError,
    InvalidArgumentError,
    PluginError,
    PrunedCommitError,
    PushRejectedError,
    RefExistsError,
    RepositoryNotFoundError,
    UnknownRemoteError,
)
from coral.objects.tensors import chunk_key
from coral.version_control.commit import commit_key


def weights(seed: int, n: int = 64, frozen_seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frozen = np.random.default_rng(frozen_seed)
    return {
        "frozen.weight": frozen.standard_normal((512, 1024)).astype(np.float32),  # 2 MiB, never changes
        "head.weight": rng.standard_normal((n, 1024)).astype(np.float32),
        "head.bias": rng.standard_normal(16).astype(np.float32),
        "step": np.array(seed, dtype=np.int64),
    }


def commit(repo: Repository, seed: int) -> str:
    return repo.commit_weights(weights(seed), f"seed {seed}", {"seed": seed})


def snapshot(path) -> dict[str, bytes]:
    """Every file of a repository folder (objects and refs), to show nothing changed."""
    root = path / ".coral"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "locks" not in p.parts and "tmp" not in p.parts
    }


@pytest.fixture
def pair(tmp_path):
    """(local, remote): the remote is an empty repository in another folder, added as ``origin``."""
    remote = Repository(tmp_path / "remote", init=True)
    local = Repository(tmp_path / "local", init=True)
    local.add_remote("origin", tmp_path / "remote")
    yield local, remote
    local.close()
    remote.close()


def test_add_list_remove_remote(tmp_path, pair):
    local, _ = pair
    assert local.list_remotes() == {"origin": str((tmp_path / "remote").resolve())}
    with pytest.raises(RefExistsError, match="origin"):
        local.add_remote("origin", tmp_path / "remote")
    local.remove_remote("origin")
    assert local.list_remotes() == {}
    with pytest.raises(UnknownRemoteError, match="remote='origin'"):
        local.remove_remote("origin")


def test_push_clone_roundtrip_is_bit_exact(tmp_path, pair):
    local, remote = pair
    hashes = [commit(local, s) for s in range(3)]
    local.tag_version("v1", "first", hashes[0])
    res = local.push()
    assert res.refs == {"origin/main": (None, hashes[-1])} and res.commits == 3
    assert remote.head_commit() == hashes[-1] and remote.fsck()["ok"]
    assert [t["name"] for t in remote.list_tags()] == ["v1"]
    assert local.resolve("origin/main") == hashes[-1]
    with Repository.clone(tmp_path / "remote", tmp_path / "copy") as copy:
        assert copy.current_branch == "main" and copy.list_remotes() == {"origin": str((tmp_path / "remote").resolve())}
        assert [c.hash for c in copy.log()] == [c.hash for c in local.log()]
        for h in hashes:
            got, want = copy.load_arrays(h), local.load_arrays(h)
            assert got.keys() == want.keys()
            for name in got:
                assert got[name].tobytes() == want[name].tobytes()
        assert copy.fsck()["ok"]


def test_second_push_sends_at_most_1_2x_the_new_checkpoint(tmp_path, pair):
    local, remote = pair
    first = commit(local, 1)
    local.push()
    second = commit(local, 2)
    old = {c for e in local.get_commit(first).tree.values() for c in e.chunks}
    new = {c for e in local.get_commit(second).tree.values() for c in e.chunks} - old
    new_bytes = sum(local.store.size(chunk_key(c)) for c in new)
    res = local.push()
    assert res.commits == 1 and res.objects >= len(new)
    assert new_bytes > 0 and res.bytes <= 1.2 * new_bytes, (res.bytes, new_bytes)
    again = local.push()
    assert again.up_to_date and again.bytes == 0


def test_push_refused_when_remote_moved_since_fetch_unless_forced(tmp_path, pair):
    local, remote = pair
    base = commit(local, 1)
    local.push()
    with Repository.clone(tmp_path / "remote", tmp_path / "other") as other:
        theirs = commit(other, 2)
        other.push()
    mine = commit(local, 3)
    before = snapshot(tmp_path / "remote")
    with pytest.raises(PushRejectedError, match="moved since the last fetch"):
        local.push()
    assert snapshot(tmp_path / "remote") == before
    local.fetch()
    assert local.resolve("origin/main") == theirs
    with pytest.raises(PushRejectedError, match="not an ancestor"):
        local.push()
    with pytest.raises(DivergedError, match="diverged"):
        local.pull()
    assert local.head_commit() == mine
    local.push(force=True)
    assert remote.head_commit() == mine and remote.fsck()["ok"]
    assert base in {c.hash for c in remote.log()}


def test_pull_fast_forwards_and_brings_training_history(tmp_path, pair):
    local, remote = pair
    commit(local, 1)
    local.update_document("checkpoints/exp", lambda _: {"history": [{"commit_hash": local.head_commit()}]})
    local.push()
    with Repository.clone(tmp_path / "remote", tmp_path / "other") as other:
        assert other.read_document("checkpoints/exp") == local.read_document("checkpoints/exp")
        new = commit(other, 2)
        other.update_document("checkpoints/exp", lambda d: {"history": d["history"] + [{"commit_hash": new}]})
        other.push()
    res = local.pull()
    assert res.refs["main"][1] == new and local.head_commit() == new
    assert [h["commit_hash"] for h in local.read_document("checkpoints/exp")["history"]][-1] == new
    assert local.pull().refs == {}  # up to date


def test_concurrent_pushes_one_wins_the_other_gets_a_clear_error(tmp_path, pair):
    local, remote = pair
    commit(local, 0)
    local.push()
    clones = [Repository.clone(tmp_path / "remote", tmp_path / f"c{i}") for i in range(2)]
    heads = [commit(c, 10 + i) for i, c in enumerate(clones)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            clones[i].push()
            outcomes[i] = "ok"
        except PushRejectedError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
    loser = next(o for o in outcomes if o != "ok")
    assert "moved" in str(loser) or "race" in str(loser)
    assert remote.head_commit() in heads and remote.fsck()["ok"]
    for c in clones:
        c.close()


def test_interrupted_push_resumes_without_resending(tmp_path, pair, monkeypatch):
    local, remote = pair
    for s in range(3):
        commit(local, s)
    from coral.store.local import LocalStore

    real_put = LocalStore.put
    sent = {"n": 0}

    def flaky_put(self, key, data, **kw):
        if key.startswith("chunks/") and self.root == remote.store.root:
            sent["n"] += 1
            if sent["n"] == 3:
                raise OSError("network went away")
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(LocalStore, "put", flaky_put)
    with pytest.raises(OSError):
        local.push()
    monkeypatch.setattr(LocalStore, "put", real_put)
    assert remote.head_commit() is None  # the branch never names a half-sent history
    arrived = sum(1 for _ in remote.store.list("chunks/"))
    assert arrived >= 2
    res = local.push()
    assert res.skipped >= arrived - 1 and remote.head_commit() == local.head_commit() and remote.fsck()["ok"]


def test_clone_depth_1_fetches_only_the_newest_checkpoint(tmp_path, pair):
    local, remote = pair
    hashes = [commit(local, s) for s in range(4)]
    local.push()
    with Repository.clone(tmp_path / "remote", tmp_path / "shallow", depth=1) as copy:
        assert [c.hash for c in copy.log()] == hashes[::-1]
        newest = copy.load_arrays()
        assert newest["head.weight"].tobytes() == weights(3)["head.weight"].tobytes()
        with pytest.raises(PrunedCommitError):
            copy.load_arrays(hashes[0])
        want = {c for e in local.get_commit(hashes[-1]).tree.values() for c in e.chunks}
        got = {k.split("/")[1] + k.split("/")[2] for k in copy.store.list("chunks/")}
        assert want <= got and len(got) < sum(1 for _ in remote.store.list("chunks/"))
        assert copy.fsck()["ok"]


def test_bad_input_changes_nothing(tmp_path, pair):
    local, remote = pair
    commit(local, 1)
    before_local, before_remote = snapshot(tmp_path / "local"), snapshot(tmp_path / "remote")
    with pytest.raises(UnknownRemoteError, match="remote='nope'"):
        local.push("nope")
    with pytest.raises(UnknownRemoteError, match="remote='nope'"):
        local.fetch("nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryNotFoundError, match="plain"):
        local.add_remote("bad", tmp_path / "plain")
    with pytest.raises(PluginError, match="gopher"):
        local.add_remote("bad", "gopher://host/repo")
    with pytest.raises(RepositoryNotFoundError):
        Repository.clone(tmp_path / "plain", tmp_path / "c1")
    assert not (tmp_path / "c1").exists()
    with pytest.raises(InvalidArgumentError, match="depth"):
        Repository.clone(tmp_path / "remote", tmp_path / "c2", depth=0)
    with pytest.raises(InvalidArgumentError, match="path"):
        Repository.clone(tmp_path / "remote", tmp_path / "local")
    assert snapshot(tmp_path / "local") == before_local and snapshot(tmp_path / "remote") == before_remote
    assert local.list_remotes() == {"origin": str((tmp_path / "remote").resolve())}


def test_gc_keeps_fetched_commits(tmp_path, pair):
    local, remote = pair
    h = commit(remote, 5)
    local.fetch()
    local.gc()
    assert local.load_arrays("origin/main")["step"] == 5 and local.resolve("origin/main") == h


def test_fsck_remote_and_repair_a_flipped_byte_in_a_shared_chunk(tmp_path, pair):
    local, remote = pair
    hashes = [commit(local, s) for s in range(3)]
    local.push()
    assert local.fsck()["ok"] and _remote_fsck(local)["ok"]
    shared = local.get_commit(hashes[0]).tree["frozen.weight"].chunks[0]  # in every checkpoint
    path = tmp_path / "local" / ".coral" / "objects" / "chunks" / shared[:2] / shared[2:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for h in hashes:
        with pytest.raises(CorruptObjectError):
            local.load_arrays(h)
    assert not local.fsck()["ok"]
    result = _repair(local)
    assert result["ok"] and shared in result["repaired"]
    for h in hashes:
        assert local.load_arrays(h)["frozen.weight"].tobytes() == weights(0)["frozen.weight"].tobytes()


def _remote_fsck(repo):
    from coral.version_control.remotes import fsck_remote

    return fsck_remote(repo, "origin")


def _repair(repo):
    from coral.version_control.remotes import repair

    return repair(repo, "origin")


def test_tracking_refs_and_branch_names(tmp_path, pair):
    local, remote = pair
    commit(local, 1)
    local.create_branch("feature/x")
    local.push(branch="feature/x")
    local.push()
    from coral.version_control.remotes import tracking_refs

    assert set(tracking_refs(local)) == {"origin/main", "origin/feature/x"}
    assert local.resolve("origin/feature/x") == local.head_commit()
    assert json.loads(remote.store.get_ref("config"))["format"] == 1
    assert remote.store.has(commit_key(local.head_commit()))



def test_pull_clone_and_push_moves_are_in_the_reflogs(tmp_path, pair):
    local, remote = pair
    h1 = commit(local, 1)
    local.push()
    assert [e["reason"] for e in remote.reflog("main")][0].startswith("push: from")
    clone = Repository.clone(tmp_path / "remote", tmp_path / "clone")
    assert clone.reflog("main")[0]["new"] == h1 and clone.reflog("main")[0]["reason"].startswith("clone: from")
    h2 = commit(local, 2)
    local.push()
    clone.pull()
    entry = clone.reflog("main")[0]
    assert (entry["old"], entry["new"], entry["reason"]) == (h1, h2, "pull: fast-forward to origin/main")
    assert clone.resolve("main@{1}") == h1
    clone.close()


def test_a_pushed_branch_deletes_with_d_and_its_commits_stay_alive_through_origin(tmp_path, pair):
    local, remote = pair
    commit(local, 1)
    local.create_branch("side")
    local.switch("side")
    side = commit(local, 2)
    local.push()
    local.switch("main")
    local.delete_branch("side")  # origin/side still reaches its head: no force needed
    local.gc(expire_reflog="now")
    assert local.resolve("origin/side") == side and local.load_arrays("origin/side")["step"] == 2


def test_a_damaged_tracking_ref_is_named_by_fsck_stops_gc_and_a_fetch_repairs_it(tmp_path, pair):
    local, remote = pair
    h = commit(remote, 3)
    local.fetch()
    local.store.compare_and_swap("remotes/origin/main", h, "not a commit")
    report = local.fsck()
    assert not report["ok"] and report["damaged_refs"][0]["restore"] == "coral fetch origin"
    assert "remote-tracking branch 'origin/main' is damaged" in report["errors"][0]
    with pytest.raises(CorruptObjectError):
        local.gc()
    local.fetch()
    assert local.resolve("origin/main") == h and local.fsck()["ok"]


# ---- the command line ------------------------------------------------------------------------------------
def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from coral.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_remote_push_clone_pull_log_branch_fsck(tmp_path, capsys):
    local_dir, remote_dir = str(tmp_path / "local"), str(tmp_path / "remote")
    Repository(remote_dir, init=True).close()
    with Repository(local_dir, init=True) as local:
        first = commit(local, 1)
    assert cli(capsys, "-C", local_dir, "remote", "add", "origin", remote_dir)[0] == 0
    code, out, _ = cli(capsys, "-C", local_dir, "remote", "list")
    assert code == 0 and out.split() == ["origin", str((tmp_path / "remote").resolve())]
    code, out, _ = cli(capsys, "-C", local_dir, "push")
    assert code == 0 and "origin/main" in out and "Pushed to origin" in out
    code, out, _ = cli(capsys, "-C", local_dir, "log")
    assert "HEAD -> main, origin/main" in out
    code, out, _ = cli(capsys, "-C", local_dir, "branch", "-r")
    assert code == 0 and "origin/main" in out and first[:8] in out
    code, out, _ = cli(capsys, "-C", str(tmp_path), "clone", "remote", "copy", "--depth", "1")
    assert code == 0 and "Cloned" in out and (tmp_path / "copy" / ".coral").is_dir()
    with Repository(local_dir) as local:
        second = commit(local, 2)
    assert cli(capsys, "-C", local_dir, "push")[0] == 0
    code, out, _ = cli(capsys, "-C", str(tmp_path / "copy"), "pull")
    assert code == 0 and second[:8] in out
    assert cli(capsys, "-C", str(tmp_path / "copy"), "fetch")[0] == 0
    code, out, _ = cli(capsys, "-C", local_dir, "fsck", "--remote", "origin")
    assert code == 0 and out.startswith("ok: remote origin")
    code, out, _ = cli(capsys, "-C", local_dir, "fsck", "--repair", "origin")
    assert code == 0 and out.startswith("ok:")
    code, _, err = cli(capsys, "-C", local_dir, "push", "nowhere")
    assert code == 1 and err.count("\n") == 1 and "remote='nowhere'" in err
    code, _, err = cli(capsys, "-C", str(tmp_path), "clone", "gopher://x/y", "z")
    assert code == 1 and err.count("\n") == 1 and "gopher" in err and not (tmp_path / "z").exists()
    code, _, err = cli(capsys, "-C", local_dir, "remote", "remove", "origin")
    assert code == 0 and cli(capsys, "-C", local_dir, "remote")[1] == ""
