"""Retention and merging: prune keeps the commit but frees its weights, gc frees exactly what no live commit
needs (delta bases included), fsck reports damage, and weight-space merges make two-parent commits."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from coral import Repository
from coral.codecs import parse_header
from coral.errors import InvalidArgumentError, MergeConflictError, PrunedCommitError, RefNotFoundError
from coral.objects import chunk_key


@pytest.fixture
def repo(tmp_path):
    with Repository(tmp_path / "repo", init=True) as r:
        yield r


def chunk_ids(repo: Repository) -> set[str]:
    return {k.split("/")[1] + k.split("/")[2] for k in repo.store.list("chunks/")}


def tree_chunks(repo: Repository, commit: str) -> set[str]:
    return {c for e in repo.get_commit(commit).tree.values() for c in e.chunks}


def drifting_history(repo: Repository, steps: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(8192).astype(np.float32)
    out = []
    for i in range(steps):
        w = w.copy()
        idx = rng.choice(w.size, 200, replace=False)
        w[idx] += rng.standard_normal(200).astype(np.float32) * 1e-3
        repo.stage_weights({"w": w})
        out.append((repo.commit(f"step {i}", {"step": i, "loss": 1.0 / (i + 1)}, pack=False), w))  # raw history
    return out


# ---- prune -------------------------------------------------------------------------------------------------


def test_prune_keeps_the_commit_in_log_but_frees_its_weights(repo):
    history = drifting_history(repo, 3)
    pruned = history[1][0]
    assert repo.prune(pruned[:8]) == pruned
    log = {c.hash: c for c in repo.log()}
    assert len(log) == 3
    assert log[pruned].pruned is True and log[pruned].metadata == {"step": 1, "loss": 0.5}
    assert log[pruned].message == "step 1"
    assert not log[history[0][0]].pruned and not log[history[2][0]].pruned
    with pytest.raises(PrunedCommitError, match=pruned[:12]):
        repo.get_weights(pruned)
    only_pruned = (
        tree_chunks(repo, pruned) - tree_chunks(repo, history[0][0]) - tree_chunks(repo, history[2][0])
    )
    assert only_pruned and only_pruned <= chunk_ids(repo)
    result = repo.gc()
    assert result["objects_removed"] >= len(only_pruned) and result["bytes_freed"] > 0
    assert not (only_pruned & chunk_ids(repo))
    assert [c.hash for c in repo.log()] == [h for h, _ in reversed(history)]  # history is not rewritten
    for commit, w in (history[0], history[2]):
        assert repo.load_arrays(commit)["w"].tobytes() == w.tobytes()
    assert repo.fsck()["ok"]
    with pytest.raises(RefNotFoundError):
        repo.prune("no-such-commit")


def test_pruned_head_can_be_committed_on_top_of(repo):
    (first, _), (head, _) = drifting_history(repo, 2)
    repo.prune(head)
    repo.gc()
    with pytest.raises(PrunedCommitError):
        repo.get_weights()
    repo.stage_weights({"w": np.ones(3, np.float32)})
    newer = repo.commit("after a pruned head")
    assert repo.get_commit(newer).parents == [head]
    assert [c.pruned for c in repo.log()] == [False, True, False]
    assert repo.load_arrays(newer)["w"].tolist() == [1.0, 1.0, 1.0]
    assert repo.load_arrays(first)["w"].size == 8192


def test_stats_count_only_live_commits(repo):
    history = drifting_history(repo, 3)
    before = repo.stats()
    repo.prune(history[0][0])
    after = repo.stats()
    assert after["commits"] == 3
    assert after["logical_bytes"] == before["logical_bytes"] - history[0][1].nbytes


# ---- gc with delta chains ----------------------------------------------------------------------------------


def _repacked(repo: Repository, steps: int = 4):
    history = drifting_history(repo, steps)
    assert repo.repack()["chunks"] == steps - 1
    chunk = {h: repo.get_commit(h).tree["w"].chunks[0] for h, _ in history}
    for (newer, _), (older, _) in zip(history[1:], history, strict=False):
        assert parse_header(repo.store.get(chunk_key(chunk[older]))).base == chunk[newer]  # reverse deltas
    return history, chunk


def test_gc_keeps_a_pruned_commits_chunk_while_a_live_commit_is_delta_encoded_against_it(repo):
    history, chunk = _repacked(repo)
    # the oldest commit is stored as a delta against step 1, which is a delta against step 2: prune both bases
    repo.prune(history[1][0])
    repo.prune(history[2][0])
    repo.gc()
    assert {chunk[history[1][0]], chunk[history[2][0]]} <= chunk_ids(repo), (
        "gc freed a base a live commit needs"
    )
    with Repository(repo.path) as fresh:  # no decoded chunk cached anywhere
        for commit, w in (history[0], history[3]):
            assert fresh.load_arrays(commit)["w"].tobytes() == w.tobytes()
        report = fresh.fsck()
        assert report["ok"], report["errors"]
        with pytest.raises(PrunedCommitError):
            fresh.get_weights(history[1][0])


def test_gc_frees_every_object_no_live_commit_needs_including_delta_bases(repo):
    history, _chunk = _repacked(repo)
    for commit, _ in history[:-1]:  # only the newest (self-contained) commit stays live
        repo.prune(commit)
    result = repo.gc()
    assert chunk_ids(repo) == tree_chunks(repo, history[-1][0])
    assert result["objects_removed"] == len(history) - 1
    assert repo.load_arrays(history[-1][0])["w"].tobytes() == history[-1][1].tobytes()
    report = repo.fsck()
    assert report["ok"] and report["unreferenced_objects"] == 0


def test_gc_removes_unreachable_commits_and_their_chunks_but_keeps_tagged_ones(repo):
    base = drifting_history(repo, 1)[0][0]
    repo.switch("doomed", create=True)
    doomed = drifting_history(repo, 1, seed=1)[0][0]
    repo.switch("kept", create=True)
    repo.switch("main")
    repo.create_branch("tagged-only", start=base)
    repo.switch("tagged-only")
    tagged = drifting_history(repo, 1, seed=2)[0][0]
    repo.tag_version("keep-me", commit_ref=tagged)
    repo.switch("main")
    repo.delete_branch("tagged-only")  # its head is tagged: reachable, -d is enough
    repo.delete_branch("kept")
    repo.delete_branch("doomed", force=True)
    assert repo.fsck()["unreferenced_objects"] == 0  # the reflog still reaches the deleted branches
    repo.gc()
    assert repo.get_commit(doomed).message  # kept: recoverable through doomed@{1} for 30 days
    stray = repo.store.root / "tmp" / ".put-leftover"
    stray.write_bytes(b"partial write of a killed process")
    assert repo.fsck()["temp_files"] == 1
    result = repo.gc(expire_reflog="now")
    assert result["temp_files_removed"] == 1 and not stray.exists() and result["objects_removed"] >= 1
    with pytest.raises(RefNotFoundError):
        repo.get_commit(doomed)  # unreachable: its commit object is gone
    assert repo.load_arrays("keep-me")["w"].size == 8192  # reachable through a tag
    assert repo.load_arrays(base)["w"].size == 8192
    report = repo.fsck()
    assert report["ok"] and report["unreferenced_objects"] == 0 and report["temp_files"] == 0


# ---- merge -------------------------------------------------------------------------------------------------


@pytest.fixture
def forked(repo):
    """base on main; 'other' and main each change the weights once."""
    rng = np.random.default_rng(5)
    base = {"w": rng.standard_normal(64).astype(np.float32), "b": np.zeros(4, np.float32), "n": np.arange(3)}
    repo.stage_weights(base)
    c_base = repo.commit("base")
    repo.switch("other", create=True)
    theirs = dict(base, w=base["w"] + 1.0, b=np.full(4, 2.0, np.float32))
    repo.stage_weights(theirs)
    c_theirs = repo.commit("theirs")
    repo.switch("main")
    ours = dict(base, w=base["w"] * 2.0)
    repo.stage_weights(ours)
    c_ours = repo.commit("ours")
    return repo, base, ours, theirs, (c_base, c_ours, c_theirs)


def _f64(a):
    return a.astype(np.float64)


@pytest.mark.parametrize(
    "strategy,weights",
    [
        ("average", None),
        ("weighted", [0.25, 0.75]),
        ("task_arithmetic", None),
        ("task_arithmetic", [0.5, 0.3]),
    ],
)
def test_merge_strategies_make_a_two_parent_commit(forked, strategy, weights):
    repo, base, ours, theirs, (c_base, c_ours, c_theirs) = forked
    merged = repo.merge("other", strategy=strategy, weights=weights, message="combine")
    commit = repo.get_commit(merged)
    assert commit.parents == [c_ours, c_theirs]
    assert commit.message == "combine"
    assert repo.current_branch == "main" and repo.head_commit() == merged
    assert commit.metadata["merge"]["strategy"] == strategy
    if strategy == "average":
        expect = 0.5 * _f64(ours["w"]) + 0.5 * _f64(theirs["w"])
    elif strategy == "weighted":
        expect = 0.25 * _f64(ours["w"]) + 0.75 * _f64(theirs["w"])
    else:
        wo, wt = weights or (1.0, 1.0)
        b = _f64(base["w"])
        expect = b + wo * (_f64(ours["w"]) - b) + wt * (_f64(theirs["w"]) - b)
    got = repo.load_arrays(merged)
    assert got["w"].dtype == np.float32
    assert got["w"].tobytes() == expect.astype(np.float32).tobytes()
    assert got["n"].tolist() == [0, 1, 2]  # equal integer tensors are kept as they are
    assert repo.log(limit=3)[0].hash == merged
    assert {c_base, c_ours, c_theirs} <= {c.hash for c in repo.log()}


def test_merge_default_message_and_bf16_stays_bf16(repo):
    w = np.linspace(-1, 1, 16, dtype=np.float32).astype(ml_dtypes.bfloat16)
    repo.stage_weights({"w": w})
    repo.commit("base")
    repo.switch("x", create=True)
    repo.stage_weights({"w": (w.astype(np.float32) * 3).astype(ml_dtypes.bfloat16)})
    repo.commit("x")
    repo.switch("main")
    merged = repo.merge("x")
    got = repo.load_arrays(merged)["w"]
    assert got.dtype == ml_dtypes.bfloat16
    assert np.allclose(got.astype(np.float32), 2 * w.astype(np.float32), atol=1e-2)
    assert "x" in repo.get_commit(merged).message and "average" in repo.get_commit(merged).message


def _conflicting(forked):
    repo, _base, ours, theirs, hashes = forked
    repo.switch("other")
    repo.stage_weights(dict(theirs, b=np.zeros(5, np.float32), **{"head.extra": np.ones(2, np.float32)}))
    c_theirs = repo.commit("theirs reshaped b and added head.extra")
    repo.switch("main")
    return repo, ours, hashes[1], c_theirs


def test_merge_conflicts_are_named_and_stop_the_merge(forked):
    repo, _ours, c_ours, _ = _conflicting(forked)
    objects_before = set(repo.store.list("commits/"))
    with pytest.raises(MergeConflictError) as err:
        repo.merge("other")
    assert set(err.value.conflicts) == {"b", "head.extra"}
    assert "'b'" in str(err.value) or "b (" in str(err.value)
    assert "head.extra" in str(err.value) and "on_conflict" in str(err.value)
    assert repo.head_commit() == c_ours
    assert set(repo.store.list("commits/")) == objects_before  # nothing was committed


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_merge_conflicts_resolved_by_picking_a_side(forked, side):
    repo, ours, c_ours, c_theirs = _conflicting(forked)
    merged = repo.merge("other", on_conflict=side)
    assert repo.get_commit(merged).parents == [c_ours, c_theirs]
    got = repo.load_arrays(merged)
    if side == "ours":
        assert got["b"].tolist() == ours["b"].tolist() and "head.extra" not in got
    else:
        assert got["b"].shape == (5,) and got["head.extra"].tolist() == [1.0, 1.0]
    expect_w = 0.5 * _f64(ours["w"]) + 0.5 * _f64(repo.load_arrays(c_theirs)["w"])
    assert got["w"].tobytes() == expect_w.astype(np.float32).tobytes()


def test_merge_argument_errors(forked):
    repo, *_ = forked
    with pytest.raises(InvalidArgumentError, match="strategy"):
        repo.merge("other", strategy="median")
    with pytest.raises(InvalidArgumentError, match="weights"):
        repo.merge("other", strategy="weighted")
    with pytest.raises(InvalidArgumentError, match="on_conflict"):
        repo.merge("other", on_conflict="both")
    with pytest.raises(RefNotFoundError, match="nope"):
        repo.merge("nope")
