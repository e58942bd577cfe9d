"""Small tensors (biases, norms, scalars) share pack chunks: fewer files, same bit-exact loads, a diff that
still names exactly the tensors that changed, and damage that is still named."""

from __future__ import annotations

import numpy as np
import pytest
from coral import Repository
from coral.errors import CorruptObjectError
from coral.objects import CHUNK_BYTES
from coral.objects.tensors import PACK_MAX, TensorEntry


def chunk_ids(repo: Repository) -> set[str]:
    return {k.split("/")[1] + k.split("/")[2] for k in repo.store.list("chunks/")}


def bits(a: np.ndarray) -> bytes:
    return a.dtype.str.encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes()


def model_like(rng: np.random.Generator) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {"embed.weight": rng.standard_normal((512, 512)).astype(np.float32)}
    for i in range(40):
        state[f"block{i}.bias"] = rng.standard_normal(64 + i).astype(np.float32)
        state[f"block{i}.norm"] = np.ones(96, dtype=np.float32) * i
    state["steps"] = np.arange(7, dtype=np.int64)
    state["scalar"] = np.asarray(np.float32(-0.0))
    state["mask"] = np.arange(33) % 2 == 0
    state["empty"] = np.zeros((0, 4), dtype=np.float32)
    return state


def test_small_tensors_share_one_chunk_per_dtype_and_load_bit_exact(tmp_path):
    state = model_like(np.random.default_rng(0))
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights(state)
        cid = repo.commit("one")
        tree = repo.get_commit(cid).tree
        packs = {e.chunks[0] for e in tree.values() if e.packed}
        assert len(packs) == 3  # float32, int64, bool
        assert not tree["embed.weight"].packed and not tree["empty"].packed
        assert len(chunk_ids(repo)) == 3 + 1  # three packs and the one big tensor's chunk
        loaded = repo.load_arrays(cid)
        assert list(loaded) == list(tree)  # the tree's order, packed tensors included
        assert all(bits(loaded[k]) == bits(v) for k, v in state.items())
        one = repo.get_weights(cid, names=["block7.bias"])["block7.bias"].data
        assert bits(one) == bits(state["block7.bias"])


def test_changing_one_small_tensor_is_the_only_change_in_diff_and_old_commits_still_load(tmp_path):
    rng = np.random.default_rng(1)
    first = model_like(rng)
    second = dict(first)
    second["block3.bias"] = first["block3.bias"] + np.float32(1e-3)
    with Repository(tmp_path, init=True) as repo:
        a = repo.commit_weights(first, "a")
        b = repo.commit_weights(second, "b")
        assert repo.diff(a, b)["changed"] == ["block3.bias"]
        ta, tb = repo.get_commit(a).tree, repo.get_commit(b).tree
        assert ta["block4.bias"].chunks != tb["block4.bias"].chunks  # its pack was rewritten
        assert ta["block4.bias"].identity == tb["block4.bias"].identity  # but it holds the same bytes
        repo.repack()
        for cid, want in ((a, first), (b, second)):
            got = repo.load_arrays(cid)
            assert all(bits(got[k]) == bits(v) for k, v in want.items())


def test_same_bytes_twice_are_kept_once_in_a_pack(tmp_path):
    w = np.linspace(0, 1, 100, dtype=np.float32)
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"a": w, "b": w.copy(), "c": w[::-1].copy()}, "tied")
        tree = repo.get_commit(cid).tree
        assert tree["a"].offset == tree["b"].offset != tree["c"].offset
        assert repo.stats()["unique_bytes"] == 2 * w.nbytes


def test_packs_are_cut_at_the_chunk_size(tmp_path):
    per = PACK_MAX // 4
    n = CHUNK_BYTES // PACK_MAX + 3  # more small bytes than one chunk holds
    state = {f"t{i}": np.full(per, i, dtype=np.float32) for i in range(n)}
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights(state, "many")
        tree = repo.get_commit(cid).tree
        assert len({e.chunks[0] for e in tree.values()}) == 2
        got = repo.load_arrays(cid)
        assert all(bits(got[k]) == bits(v) for k, v in state.items())
        sizes = repo.chunk_sizes(cid)  # a pack's cost is split among its tensors, not counted per tensor
        assert sum(s["stored"] for s in sizes.values()) <= sum(repo.store.size(k) for k in repo.store.list("chunks/"))


def test_an_unchanged_save_writes_no_pack(tmp_path):
    state = model_like(np.random.default_rng(2))
    with Repository(tmp_path, init=True) as repo:
        repo.commit_weights(state, "a")
        before = chunk_ids(repo)
        repo.commit_weights({k: v.copy() for k, v in state.items()}, "b")
        assert chunk_ids(repo) == before


def test_a_packed_entry_pointing_outside_its_pack_is_named_as_damage(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"a": np.ones(8, np.float32), "b": np.zeros(8, np.float32)}, "x")
        good = repo.get_commit(cid).tree["b"]
        bad = TensorEntry(good.dtype, (8,), good.chunks, offset=64, digest=good.digest)
        with pytest.raises(CorruptObjectError, match="outside its pack") as info:
            repo.objects.read_tensor("b", bad)
        assert "'b'" in str(info.value) or "b" == info.value.tensor


@pytest.mark.parametrize(
    "change",
    [
        {"offset": -4},
        {"offset": 3},  # not a multiple of the element size
        {"offset": "0"},
        {"digest": "zz"},
        {"chunks": []},
        {"shape": [PACK_MAX]},  # too big to be packed
    ],
)
def test_malformed_packed_entries_are_refused(change):
    entry = {"dtype": "float32", "shape": [8], "chunks": ["ab" * 32], "offset": 0, "digest": "cd" * 32}
    TensorEntry.from_json("w", entry)  # the well-formed one parses
    with pytest.raises(CorruptObjectError):
        TensorEntry.from_json("w", {**entry, **change})


def test_fsck_names_a_packed_tensor_outside_its_pack(tmp_path):
    from coral.version_control.commit import Commit, commit_key

    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"a": np.ones(8, np.float32), "b": np.zeros(8, np.float32)}, "x")
        good = repo.get_commit(cid)
        tree = dict(good.tree)
        b = tree["b"]
        tree["b"] = TensorEntry(b.dtype, b.shape, b.chunks, offset=4096, digest=b.digest)
        bad = Commit([cid], "hostile", {}, tree, good.timestamp + 1)
        raw = bad.to_bytes()
        repo.store.put(commit_key(bad.id), raw)
        repo.store.compare_and_swap("heads/main", cid, bad.id)
        report = repo.fsck()
        assert not report["ok"]
        assert any("'b'" in e and "outside its pack" in e for e in report["errors"])
