"""Remotes on moto's real S3 server (127.0.0.1): add/list/remove, fetch, push, pull, clone (and depth=1), the push
safety rules, concurrent pushes, an interrupted push resumed without resending, fsck --remote and repair, bad
input, and the command line (remote-tracking decorations, ``branch -r``, the progress bar with bytes and rate)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from coral import Repository
from coral.errors import (
    CorruptObjectError,
    DivergedError,
    PrunedCommitError,
    PushRejectedError,
    RepositoryNotFoundError,
    StoreUnavailableError,
    UnknownRemoteError,
)
from coral.objects.tensors import chunk_key
from coral.store import S3Store
from coral.testing.s3 import free_port
from coral.version_control.remotes import fsck_remote, repair


def weights(seed: int, rows: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frozen = np.random.default_rng(0)
    return {
        "frozen.weight": frozen.standard_normal((256, 1024)).astype(np.float32),  # 1 MiB, never changes
        "head.weight": rng.standard_normal((rows, 1024)).astype(np.float32),
        "head.bias": rng.standard_normal(16).astype(np.float32),
        "step": np.array(seed, dtype=np.int64),
    }


def commit(repo: Repository, seed: int) -> str:
    return repo.commit_weights(weights(seed), f"seed {seed}", {"seed": seed})


def bucket_state(endpoint: str, bucket: str) -> dict[str, str]:
    """Every object of the bucket (key -> ETag) except lock leases: shows that nothing changed."""
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            if "/locks/" not in f"/{o['Key']}":
                out[o["Key"]] = o["ETag"]
    return out


def fresh(url: str) -> Repository:
    """A new handle on the remote, as another machine would open it."""
    return Repository(url)


@pytest.fixture
def s3_pair(tmp_path, s3_url):
    """(local folder repository, its remote ``origin``: an empty repository on the S3 server)."""
    Repository(s3_url, init=True).close()
    local = Repository(tmp_path / "local", init=True)
    local.add_remote("origin", s3_url)
    yield local, s3_url
    local.close()


def test_add_push_clone_fetch_pull_remove_against_s3(tmp_path, s3_pair):
    local, url = s3_pair
    assert local.list_remotes() == {"origin": url}
    hashes = [commit(local, s) for s in range(3)]
    local.tag_version("v1", "first", hashes[0])
    res = local.push()
    assert res.refs == {"origin/main": (None, hashes[-1])} and res.commits == 3 and res.bytes > 0
    with fresh(url) as remote:
        assert remote.head_commit() == hashes[-1] and remote.fsck()["ok"]
        assert [t["name"] for t in remote.list_tags()] == ["v1"]
    assert local.resolve("origin/main") == hashes[-1]

    with Repository.clone(url, tmp_path / "copy") as copy:  # a second machine
        assert copy.list_remotes() == {"origin": url} and copy.current_branch == "main"
        assert [c.hash for c in copy.log()] == hashes[::-1]
        for h in hashes:
            got, want = copy.load_arrays(h), local.load_arrays(h)
            assert got.keys() == want.keys() and all(got[k].tobytes() == want[k].tobytes() for k in got)
        assert copy.fsck()["ok"]
        theirs = commit(copy, 7)
        old = {c for e in copy.get_commit(hashes[-1]).tree.values() for c in e.chunks}
        new_bytes = sum(copy.store.size(chunk_key(c))
                        for c in {c for e in copy.get_commit(theirs).tree.values() for c in e.chunks} - old)
        pushed = copy.push()
        assert pushed.commits == 1 and pushed.bytes <= 1.2 * new_bytes, (pushed.bytes, new_bytes)

    fetched = local.fetch()
    assert fetched.refs == {"origin/main": (hashes[-1], theirs)} and local.head_commit() == hashes[-1]
    pulled = local.pull()
    assert pulled.refs["main"] == (hashes[-1], theirs) and local.head_commit() == theirs
    assert local.load_arrays()["step"] == 7
    assert local.push().up_to_date

    with Repository.clone(url, tmp_path / "shallow", depth=1) as shallow:
        assert [c.hash for c in shallow.log()] == [theirs, *hashes[::-1]]
        assert shallow.load_arrays()["head.weight"].tobytes() == weights(7)["head.weight"].tobytes()
        with pytest.raises(PrunedCommitError):
            shallow.load_arrays(hashes[0])
        newest = {c for e in shallow.get_commit(theirs).tree.values() for c in e.chunks}
        got = {k.split("/")[1] + k.split("/")[2] for k in shallow.store.list("chunks/")}
        with fresh(url) as remote:
            assert newest <= got and len(got) < sum(1 for _ in remote.store.list("chunks/"))
        assert shallow.fsck()["ok"]

    local.remove_remote("origin")
    assert local.list_remotes() == {}
    with pytest.raises(UnknownRemoteError, match="remote='origin'"):
        local.push()


def test_push_to_a_moved_s3_branch_and_a_diverged_pull_are_refused(tmp_path, s3_pair, s3_env, s3_bucket):
    local, url = s3_pair
    base = commit(local, 1)
    local.push()
    with Repository.clone(url, tmp_path / "other") as other:
        theirs = commit(other, 2)
        other.push()
    mine = commit(local, 3)
    before = bucket_state(s3_env, s3_bucket)
    with pytest.raises(PushRejectedError, match="moved since the last fetch"):
        local.push()
    assert bucket_state(s3_env, s3_bucket) == before  # refused before anything was sent
    local.fetch()
    assert local.resolve("origin/main") == theirs
    with pytest.raises(PushRejectedError, match="not an ancestor"):
        local.push()
    with pytest.raises(DivergedError, match="diverged"):
        local.pull()
    assert local.head_commit() == mine
    local.push(force=True)
    with fresh(url) as remote:
        assert remote.head_commit() == mine and remote.fsck()["ok"]
        assert base in {c.hash for c in remote.log()}


def test_two_concurrent_pushes_to_s3_one_wins_the_other_gets_a_clear_error(tmp_path, s3_pair):
    local, url = s3_pair
    commit(local, 0)
    local.push()
    clones = [Repository.clone(url, tmp_path / f"c{i}") for i in range(2)]
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
        t.join(300)
    assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
    loser = next(o for o in outcomes if o != "ok")
    assert ("moved" in str(loser) or "race" in str(loser)) and "\n" not in str(loser)
    with fresh(url) as remote:  # the branch names a whole commit: it loads, every chunk verified
        winner = remote.head_commit()
        assert winner in heads and remote.fsck()["ok"]
        assert remote.load_arrays(winner)["step"] in (10, 11)
    for c in clones:
        c.close()


def test_an_interrupted_push_to_s3_resumes_without_resending(s3_pair, monkeypatch):
    local, url = s3_pair
    for s in range(3):
        commit(local, s)
    real_put = S3Store.put
    sent = {"n": 0}

    def flaky_put(self, key, data, **kw):  # the connection drops at the third chunk (the real server is used)
        if key.startswith("chunks/"):
            sent["n"] += 1
            if sent["n"] == 3:
                raise OSError("network went away")
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(S3Store, "put", flaky_put)
    with pytest.raises(OSError, match="network went away"):
        local.push()
    monkeypatch.setattr(S3Store, "put", real_put)
    with fresh(url) as remote:
        assert remote.head_commit() is None  # the branch never names a half-sent history
        arrived = sum(1 for _ in remote.store.list("chunks/"))
    assert arrived >= 2
    res = local.push()
    assert res.skipped >= arrived - 1, (res.skipped, arrived)  # what arrived is not sent again
    with fresh(url) as remote:
        total = sum(1 for _ in remote.store.list("chunks/"))
        assert res.objects <= total - arrived + 1 + 3  # the missing chunks and the commits, no more
        assert remote.head_commit() == local.head_commit() and remote.fsck()["ok"]


def test_fsck_remote_and_repair_from_s3(tmp_path, s3_pair):
    local, url = s3_pair
    hashes = [commit(local, s) for s in range(3)]
    local.push()
    checked = fsck_remote(local, "origin")
    assert checked["ok"] and checked["remote"] == "origin"
    local.wait()  # background packing done: the chunk files below are the ones the commits use
    shared = local.get_commit(hashes[0]).tree["frozen.weight"].chunks[0]  # in every checkpoint
    path = tmp_path / "local" / ".coral" / "objects" / "chunks" / shared[:2] / shared[2:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError):
        local.load_arrays(hashes[0])
    result = repair(local, "origin")
    assert result["ok"] and shared in result["repaired"]
    for h in hashes:
        assert local.load_arrays(h)["frozen.weight"].tobytes() == weights(0)["frozen.weight"].tobytes()


# ---- bad input: one clear line, bounded time, nothing changed ---------------------------------------------
def test_bad_remote_urls_on_s3_change_nothing(tmp_path, s3_pair, s3_env, s3_bucket):
    local, url = s3_pair
    commit(local, 1)
    boto3.session.Session().client("s3", endpoint_url=s3_env).put_object(
        Bucket=s3_bucket, Key="other/data.bin", Body=b"not coral"
    )
    with pytest.raises(RepositoryNotFoundError, match="not a Coral repository") as err:
        local.add_remote("bad", f"s3://{s3_bucket}/other")
    assert "\n" not in str(err.value)
    with pytest.raises(RepositoryNotFoundError, match="not a Coral repository"):
        Repository.clone(f"s3://{s3_bucket}/other", tmp_path / "c1")
    assert not (tmp_path / "c1").exists()
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        local.add_remote("bad", "s3://no-such-bucket/x")
    with pytest.raises(UnknownRemoteError, match="remote='nope'"):
        local.push("nope")
    assert local.list_remotes() == {"origin": url}
    assert "other/data.bin" in bucket_state(s3_env, s3_bucket)


@pytest.mark.timeout(180)
def test_push_and_fetch_to_an_unreachable_endpoint_fail_fast_with_one_line(s3_pair, monkeypatch):
    local, _url = s3_pair
    head = commit(local, 1)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    for action in (local.push, local.fetch, local.pull):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="cannot reach") as err:
            action()
        assert dead in str(err.value) and "\n" not in str(err.value)
        assert time.monotonic() - t0 < 120  # bounded (a hang would meet the test timeout instead)
    assert local.head_commit() == head and "origin/main" not in local.list_branches()


# ---- the command line ------------------------------------------------------------------------------------
def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from coral.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_init_of_an_s3_url_creates_the_repository_in_the_bucket(tmp_path, s3_url, capsys):
    # it used to create a local folder named "s3:" under the current folder and leave the bucket empty
    code, out, _ = cli(capsys, "-C", str(tmp_path), "init", s3_url)
    assert code == 0 and out.strip() == f"Initialized empty Coral repository in {s3_url}"
    assert list(tmp_path.iterdir()) == []
    with Repository(s3_url) as repo:
        assert repo.current_branch == "main"
    code, out, _ = cli(capsys, "-C", str(tmp_path), "init", s3_url)
    assert code == 0 and out.startswith("Reinitialized existing")
    local_dir = str(tmp_path / "local")
    with Repository(local_dir, init=True) as local:
        commit(local, 1)
    assert cli(capsys, "-C", local_dir, "remote", "add", "origin", s3_url)[0] == 0
    assert cli(capsys, "-C", local_dir, "push")[0] == 0


def test_cli_remote_push_log_branch_clone_pull_fsck_against_s3(tmp_path, s3_url, s3_bucket, capsys):
    local_dir = str(tmp_path / "local")
    Repository(s3_url, init=True).close()
    with Repository(local_dir, init=True) as local:
        first = commit(local, 1)
    assert cli(capsys, "-C", local_dir, "remote", "add", "origin", s3_url)[0] == 0
    code, out, _ = cli(capsys, "-C", local_dir, "remote", "list")
    assert code == 0 and out.split() == ["origin", s3_url]
    code, out, _ = cli(capsys, "-C", local_dir, "push")
    assert code == 0 and "origin/main" in out and "Pushed to origin" in out
    code, out, _ = cli(capsys, "-C", local_dir, "log")
    assert "HEAD -> main, origin/main" in out
    code, out, _ = cli(capsys, "-C", local_dir, "branch", "-r")
    assert code == 0 and "origin/main" in out and first[:8] in out
    code, out, _ = cli(capsys, "-C", str(tmp_path), "clone", s3_url, "copy", "--depth", "1")
    assert code == 0 and "Cloned" in out and (tmp_path / "copy" / ".coral").is_dir()
    with Repository(local_dir) as local:
        second = commit(local, 2)
    code, out, _ = cli(capsys, "-C", local_dir, "push", "--force")
    assert code == 0
    code, out, _ = cli(capsys, "-C", str(tmp_path / "copy"), "pull")
    assert code == 0 and second[:8] in out
    assert cli(capsys, "-C", str(tmp_path / "copy"), "fetch")[0] == 0
    code, out, _ = cli(capsys, "-C", str(tmp_path / "copy"), "log")
    assert "HEAD -> main, origin/main" in out
    code, out, _ = cli(capsys, "-C", local_dir, "fsck", "--remote", "origin")
    assert code == 0 and out.startswith("ok: remote origin")
    code, out, _ = cli(capsys, "-C", local_dir, "fsck", "--repair", "origin")
    assert code == 0 and out.startswith("ok:")
    code, _, err = cli(capsys, "-C", str(tmp_path), "clone", f"s3://{s3_bucket}/nothing-here", "z")
    assert code == 1 and err.count("\n") == 1 and "not a Coral repository" in err and not (tmp_path / "z").exists()
    code, _, err = cli(capsys, "-C", local_dir, "remote", "add", "bad", f"s3://{s3_bucket}/nothing-here")
    assert code == 1 and err.count("\n") == 1
    code, _, err = cli(capsys, "-C", local_dir, "push", "nowhere")
    assert code == 1 and err.count("\n") == 1 and "remote='nowhere'" in err
    assert cli(capsys, "-C", local_dir, "remote", "remove", "origin")[0] == 0
    assert cli(capsys, "-C", local_dir, "remote")[1] == ""


CORAL = str(Path(sys.executable).with_name("coral"))  # the installed command


def _run_in_terminal(argv: list[str], timeout: float = 240.0) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdout and stderr (as in a shell); return its code and output."""
    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="120", TERM="xterm")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(30)
    return code, b"".join(chunks).decode(errors="replace")


def test_cli_push_on_a_terminal_shows_a_progress_bar_with_bytes_and_rate(tmp_path, s3_url):
    Repository(s3_url, init=True).close()
    with Repository(tmp_path / "local", init=True) as local:
        rng = np.random.default_rng(0)
        big = {f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(6)}
        local.commit_weights(big, "24 MiB")
        local.add_remote("origin", s3_url)
    code, out = _run_in_terminal([CORAL, "-C", str(tmp_path / "local"), "push"])
    assert code == 0, out
    assert "Pushing to origin" in out, out
    assert "\u2501" in out, out  # the bar was drawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    # bytes done / total, then the rate column: a rate, or "?" when the push ended before rich measured one
    assert re.search(r"[\d.]+/[\d.]+ [kMG]?B ([\d.]+ [kMG]?B/s|\?)", plain), plain
    assert "Pushed to origin" in out
