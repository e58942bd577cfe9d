"""The fast paths of the object store keep every round trip exact: the per-chunk change check never skips a
changed chunk, parallel loads return the right bytes, and repack keeps delta chains bounded even when a
tensor stays unchanged for many commits between changes."""

from __future__ import annotations

import numpy as np
import pytest
from coral import Repository
from coral.codecs import CODEC_PLANES, CODEC_RAW, parse_header
from coral.objects import CHUNK_BYTES, chunk_key
from coral.objects.tensors import MAX_DELTA_DEPTH


def _header(repo: Repository, cid: str):
    return parse_header(repo.store.get_range(chunk_key(cid), 0, 64))


def _chain_length(repo: Repository, cid: str) -> int:
    n, base = 0, _header(repo, cid).base
    while base is not None:
        n += 1
        base = _header(repo, base).base
    return n


def test_a_chunk_changed_in_place_is_written_again(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(3 * CHUNK_BYTES // 4 // 2).astype(np.float32)  # two chunks
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": w})
        first = repo.commit("first")
        w[-1] = np.nextafter(w[-1], np.float32(1))  # the same array object, one bit changed in chunk 2
        repo.stage_weights({"w": w})
        second = repo.commit("second")
        c1, c2 = repo.get_commit(first).tree["w"].chunks, repo.get_commit(second).tree["w"].chunks
        assert c1[0] == c2[0] and c1[1] != c2[1]
        assert repo.load_arrays(second)["w"].tobytes() == w.tobytes()
        assert repo.fsck()["ok"]


def test_an_unchanged_chunk_whose_object_was_removed_is_written_again(tmp_path):
    w = np.arange(10_000, dtype=np.float32)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": w})
        cid = repo.get_commit(repo.commit("first")).tree["w"].chunks[0]
        repo.store.delete(chunk_key(cid))  # e.g. freed by prune + gc since the last save
        repo.stage_weights({"w": w})
        h = repo.commit("again")
        assert repo.store.has(chunk_key(cid))
        assert repo.load_arrays(h)["w"].tobytes() == w.tobytes()


def test_same_name_with_other_dtype_or_shape_is_stored_as_given(tmp_path):
    w = np.arange(4096, dtype=np.float32)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": w})
        repo.commit("f32")
        repo.stage_weights({"w": w.view(np.int32).reshape(64, 64)})
        h = repo.commit("same bytes as int32 64x64")
        got = repo.load_arrays(h)["w"]
        assert got.dtype == np.int32 and got.shape == (64, 64)
        assert got.tobytes() == w.tobytes()


def test_load_arrays_reads_many_tensors_exactly(tmp_path):
    rng = np.random.default_rng(1)
    state = {
        f"t{i}": rng.standard_normal(n).astype(np.float32)
        for i, n in enumerate([1, 7, 300_000, CHUNK_BYTES // 4 + 3])
    }
    state["empty"] = np.zeros((0, 3), np.float32)
    state["half"] = rng.standard_normal((33, 17)).astype(np.float16)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights(state)
        h = repo.commit("mixed")
    with Repository(tmp_path) as repo:
        got = repo.load_arrays(h)
        assert set(got) == set(state)
        for name, arr in state.items():
            assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
            assert got[name].tobytes() == arr.tobytes()
            got[name][...] = 0  # the caller owns writable arrays


def test_repack_compresses_a_raw_chunk_that_has_no_newer_counterpart(tmp_path):
    rng = np.random.default_rng(2)
    w = (rng.standard_normal(200_000) * 0.02).astype(np.float32)  # weight-like: saved raw, compresses ~16%
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"old_only": w})
        first = repo.commit("first")
        cid = repo.get_commit(first).tree["old_only"].chunks[0]
        assert _header(repo, cid).codec == CODEC_RAW
        repo.stage_weights({"other": w[:10] + 1})
        repo.commit("the tensor is gone")
        assert repo.repack()["bytes_saved"] > 0
        assert _header(repo, cid).codec == CODEC_PLANES
        assert repo.load_arrays(first)["old_only"].tobytes() == w.tobytes()


@pytest.mark.parametrize("period", [1, 3])
def test_incremental_repack_bounds_chains_across_unchanged_runs(tmp_path, period):
    """A tensor that changes every ``period`` commits, repacked after each commit (as CheckpointManager does)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(4096).astype(np.float32)
    history = []
    with Repository(tmp_path, init=True) as repo:
        for i in range((2 * MAX_DELTA_DEPTH + 3) * period):
            if i % period == 0:
                w = w.copy()
                w[rng.integers(0, w.size, 50)] += 1e-3
            repo.stage_weights({"w": w, "bias": np.full(8, i, np.float32)})
            history.append((repo.commit(f"step {i}"), w.copy()))
            repo.repack(max_commits=1)
        chains = [_chain_length(repo, repo.get_commit(c).tree["w"].chunks[0]) for c, _ in history]
        assert max(chains) <= MAX_DELTA_DEPTH, chains
        assert chains[-1] == 0
        assert sum(c > 0 for c in chains) > len(chains) // 2, chains
        for commit, expected in history:
            assert repo.load_arrays(commit)["w"].tobytes() == expected.tobytes()
        assert repo.fsck()["ok"]
