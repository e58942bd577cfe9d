"""The object store under a real repository: exact round trips (property tests), dedup, bounded delta chains,
and hash-checked reads that name the damaged object and tensor."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from coral import Repository
from coral.codecs import CODEC_DELTA_SUB, CODEC_DELTA_XOR, CODEC_PLANES, CODEC_RAW, parse_header
from coral.core.dtypes import DTYPES, dtype_from_name
from coral.errors import CorruptObjectError, ObjectNotFoundError
from coral.objects import CHUNK_BYTES, chunk_key
from coral.objects.tensors import MAX_DELTA_DEPTH
from coral.store import MemoryStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- helpers -----------------------------------------------------------------------------------------------


def chunk_ids(repo: Repository) -> set[str]:
    return {k.split("/")[1] + k.split("/")[2] for k in repo.store.list("chunks/")}


def header(repo: Repository, cid: str):
    return parse_header(repo.store.get(chunk_key(cid)))


def chain_length(repo: Repository, cid: str) -> int:
    """How many delta bases a load of ``cid`` walks through (0 for a self-contained chunk)."""
    n, seen = 0, {cid}
    base = header(repo, cid).base
    while base is not None:
        assert base not in seen, f"cyclic delta chain at {cid}"
        seen.add(base)
        n += 1
        base = header(repo, base).base
    return n


def object_path(repo: Repository, cid: str):
    return repo.store.root.joinpath("objects", *chunk_key(cid).split("/"))


def flip_byte(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def drift(rng: np.random.Generator, w: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """A training-like step: a few elements move by a little."""
    out = w.copy()
    idx = rng.choice(out.size, max(1, int(out.size * frac)), replace=False)
    out.reshape(-1)[idx] += rng.standard_normal(idx.size).astype(out.dtype) * 1e-3
    return out


# ---- property tests through the Repository -----------------------------------------------------------------


@st.composite
def weight_dicts(draw):
    names = draw(
        st.lists(
            st.from_regex(r"[a-z]{1,6}(\.[a-z0-9_]{1,5}){0,2}", fullmatch=True),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    out = {}
    for name in names:
        dname = draw(st.sampled_from(sorted(DTYPES)))
        dt = dtype_from_name(dname)
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
        n = int(np.prod(shape, dtype=np.int64))
        raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
        arr = np.frombuffer(raw, dtype=np.uint8).copy()
        if dname == "bool":
            arr &= 1
        out[name] = arr.view(dt).reshape(shape)
    return out


@SETTINGS
@given(weight_dicts(), weight_dicts())
def test_stage_commit_get_weights_roundtrips_any_tensors(first, second):
    with Repository(None, init=True, store=MemoryStore()) as repo:
        c1 = repo.stage_weights(first) and repo.commit("one")
        repo.stage_weights(second)
        c2 = repo.commit("two")
        repo.repack()
        for commit, expected in ((c1, first), (c2, second)):
            got = repo.get_weights(commit)
            assert set(got) == set(expected)
            for name, arr in expected.items():
                assert got[name].shape == arr.shape
                assert got[name].data.dtype == arr.dtype
                assert got[name].data.tobytes() == arr.tobytes()
        assert repo.fsck()["ok"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        ["float32", "bfloat16", "float16", "int32", "int64", "uint8", "complex64", "float8_e4m3fn"]
    ),
    st.lists(st.sampled_from(["drift", "same", "noise", "counter"]), min_size=2, max_size=6),
    st.integers(0, 2**31),
)
def test_history_with_repacked_deltas_loads_exactly(dname, steps, seed):
    rng = np.random.default_rng(seed)
    dt = dtype_from_name(dname)
    w = np.frombuffer(rng.bytes(4096 * dt.itemsize), dtype=dt).copy()
    history = []
    with Repository(None, init=True, store=MemoryStore()) as repo:
        for i, step in enumerate(["noise", *steps]):
            raw = w.view(np.uint8).copy()
            if step == "drift":
                idx = rng.choice(raw.size, 64, replace=False)
                raw[idx] ^= rng.integers(1, 4, idx.size, dtype=np.uint8)  # low-order bit flips
            elif step == "noise":
                raw[:] = np.frombuffer(rng.bytes(raw.size), dtype=np.uint8)
            elif step == "counter":
                raw = (raw.view(np.uint8).astype(np.uint16) + 1).astype(np.uint8)
            w = raw.view(dt)
            repo.stage_weights({"w": w})
            history.append((repo.commit(f"step {i}"), w.tobytes()))
        repo.repack()
        for commit, expected in history:
            assert repo.load_arrays(commit)["w"].tobytes() == expected


# ---- dedup -------------------------------------------------------------------------------------------------


def test_identical_chunks_are_stored_once(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(10_000).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"a": w, "b": w.copy(), "as_ints": w.view(np.uint32)})
        first = repo.commit("same bytes under three names and two dtypes")
        assert len(chunk_ids(repo)) == 1
        repo.stage_weights({"a": w, "c": w.reshape(100, 100)})
        repo.commit("again")
        assert len(chunk_ids(repo)) == 1
        stats = repo.stats()
        assert stats["logical_bytes"] == 5 * w.nbytes
        assert stats["unique_bytes"] == w.nbytes
        assert stats["dedup_ratio"] == pytest.approx(5.0)
        assert repo.get_weights(first)["as_ints"].data.tobytes() == w.tobytes()


def test_only_changed_chunks_of_a_large_tensor_are_written(tmp_path):
    n = (CHUNK_BYTES * 5 // 2) // 4  # two and a half chunks of float32
    w = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"big": w})
        first = repo.commit("big")
        entry = repo.get_commit(first).tree["big"]
        assert len(entry.chunks) == 3
        before = chunk_ids(repo)
        w2 = w.copy()
        w2[CHUNK_BYTES // 4 + 10] += 1.0  # one element inside the second chunk
        repo.stage_weights({"big": w2})
        second = repo.commit("one element changed")
        after = chunk_ids(repo)
        assert len(after - before) == 1
        e1, e2 = entry.chunks, repo.get_commit(second).tree["big"].chunks
        assert [a == b for a, b in zip(e1, e2, strict=True)] == [True, False, True]
        assert repo.load_arrays(second)["big"].tobytes() == w2.tobytes()
        assert repo.load_arrays(first)["big"].tobytes() == w.tobytes()


def test_chunk_turned_into_a_delta_still_dedups(tmp_path):
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal(20_000).astype(np.float32)
    w1 = drift(rng, w0)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": w0})
        c0 = repo.commit("0")
        repo.stage_weights({"w": w1})
        repo.commit("1", pack=False)
        assert repo.repack()["chunks"] == 1
        old = repo.get_commit(c0).tree["w"].chunks[0]
        assert header(repo, old).codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB)
        count = len(chunk_ids(repo))
        repo.stage_weights({"again": w0})  # same bytes as the now delta-encoded chunk: nothing new is stored
        repo.commit("2")
        assert len(chunk_ids(repo)) == count
        assert header(repo, old).codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB)


def test_compressible_tensors_are_stored_smaller(tmp_path):
    w = np.zeros((256, 256), dtype=np.float32)
    w[::7, ::5] = 1.5
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"sparse": w})
        h = repo.commit("mostly zeros")
        cid = repo.get_commit(h).tree["sparse"].chunks[0]
        assert header(repo, cid).codec == CODEC_PLANES
        stats = repo.stats()
        assert stats["stored_bytes"] < w.nbytes / 4
        assert stats["compression_ratio"] > 4
        assert stats["total_ratio"] == pytest.approx(stats["dedup_ratio"] * stats["compression_ratio"])
        assert repo.load_arrays(h)["sparse"].tobytes() == w.tobytes()


def test_in_place_changes_between_saves_are_stored(tmp_path):
    w = np.random.default_rng(6).standard_normal(50_000).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:
        repo.stage_weights({"w": w})
        first = repo.commit("before")
        before = w.tobytes()
        w[12_345] = 7.0  # the training loop updates the same array object in place
        repo.stage_weights({"w": w})
        second = repo.commit("after")
        assert repo.load_arrays(first)["w"].tobytes() == before
        assert repo.load_arrays(second)["w"].tobytes() == w.tobytes()


def test_restaging_after_another_handle_freed_the_chunks_stores_them_again(tmp_path):
    w = np.random.default_rng(7).standard_normal(50_000).astype(np.float32)
    with Repository(tmp_path, init=True) as writer:
        writer.stage_weights({"w": w})
        first = writer.commit("first")
        writer.stage_weights({"other": np.ones(4, np.float32)})
        writer.commit("second")
        with Repository(tmp_path) as janitor:  # e.g. a retention job in another process
            janitor.prune(first)
            assert janitor.gc()["objects_removed"] >= 1
        writer.stage_weights({"w": w})  # same name, same bytes as the freed commit
        third = writer.commit("third")
        assert writer.load_arrays(third)["w"].tobytes() == w.tobytes()
        assert writer.fsck()["ok"]


# ---- delta chains ------------------------------------------------------------------------------------------


def _history(repo: Repository, steps: int, seed: int = 3, repack_each: bool = False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(16_384).astype(np.float32)
    out = []
    for i in range(steps):
        w = drift(rng, w)
        repo.stage_weights({"w": w, "frozen": np.arange(100, dtype=np.int64)})
        out.append((repo.commit(f"step {i}", pack=False), w.copy()))  # repack is what these tests check
        if repack_each:
            repo.repack()
    return out


def test_repack_makes_deltas_with_bounded_chains_and_keeps_heads_self_contained(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        history = _history(repo, 3 * MAX_DELTA_DEPTH)
        stored_before = repo.stats()["stored_bytes"]
        result = repo.repack()
        assert result["chunks"] > 0 and result["bytes_saved"] > 0
        assert repo.stats()["stored_bytes"] == stored_before - result["bytes_saved"]
        depths = [chain_length(repo, repo.get_commit(c).tree["w"].chunks[0]) for c, _ in history]
        assert max(depths) == MAX_DELTA_DEPTH, depths
        assert depths[-1] == 0, "the newest commit must load without walking a delta chain"
        assert repo.repack()["chunks"] == 0  # idempotent
    with Repository(tmp_path) as fresh:
        for commit, w in history:
            assert fresh.load_arrays(commit)["w"].tobytes() == w.tobytes()
        assert fresh.fsck()["ok"]


def test_repacking_after_every_commit_keeps_chains_bounded(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        history = _history(repo, 3 * MAX_DELTA_DEPTH + 2, repack_each=True)
        depths = [chain_length(repo, repo.get_commit(c).tree["w"].chunks[0]) for c, _ in history]
        assert max(depths) <= MAX_DELTA_DEPTH, depths
        assert sum(d > 0 for d in depths) >= len(depths) // 2, f"repack stopped making deltas: {depths}"
    with Repository(tmp_path) as fresh:
        for commit, w in history:
            assert fresh.load_arrays(commit)["w"].tobytes() == w.tobytes()
        assert fresh.fsck()["ok"]


# ---- every read is hash-checked ----------------------------------------------------------------------------


def _two_tensor_repo(path, sparse: bool = False):
    rng = np.random.default_rng(4)
    enc = np.zeros(50_000, np.float32) if sparse else np.frombuffer(rng.bytes(200_000), np.float32).copy()
    if sparse:
        enc[::97] = 2.0
    repo = Repository(path, init=True)
    repo.stage_weights({"encoder.weight": enc, "decoder.bias": rng.standard_normal(64).astype(np.float32)})
    commit = repo.commit("two tensors")
    cid = repo.get_commit(commit).tree["encoder.weight"].chunks[0]
    repo.close()
    return commit, cid, enc


@pytest.mark.parametrize("codec,sparse", [(CODEC_RAW, False), (CODEC_PLANES, True)], ids=["raw", "planes"])
@pytest.mark.parametrize("where", ["body-start", "body-end", "truncate", "header"])
def test_corrupt_chunk_raises_naming_object_and_tensor(tmp_path, codec, sparse, where):
    commit, cid, _ = _two_tensor_repo(tmp_path, sparse)
    with Repository(tmp_path) as repo:
        assert header(repo, cid).codec == codec
        path = object_path(repo, cid)
        size = path.stat().st_size
    if where == "truncate":
        path.write_bytes(path.read_bytes()[: size - 3])
    else:
        flip_byte(path, {"body-start": 40, "body-end": size - 1, "header": 9}[where])  # 9: the codec byte
    with Repository(tmp_path) as repo:
        weights = repo.get_weights(commit)  # lazy: nothing read yet
        assert weights["decoder.bias"].data.shape == (64,)  # the undamaged tensor still loads
        with pytest.raises(CorruptObjectError) as err:
            _ = weights["encoder.weight"].data
        assert err.value.object_id == cid and err.value.tensor == "encoder.weight"
        assert cid in str(err.value) and "encoder.weight" in str(err.value)
        report = repo.fsck()
        assert not report["ok"]
        assert any(cid in e and "encoder.weight" in e for e in report["errors"]), report["errors"]


def test_corrupt_delta_base_is_reported_when_loading_the_dependent_tensor(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        history = _history(repo, 3)
        repo.repack()
        old = repo.get_commit(history[0][0]).tree["w"].chunks[0]
        base = header(repo, old).base
        assert base is not None
        flip_byte(object_path(repo, base), object_path(repo, base).stat().st_size - 1)
    with Repository(tmp_path) as repo:
        with pytest.raises(CorruptObjectError) as err:
            repo.load_arrays(history[0][0])
        assert err.value.tensor == "w"
        assert err.value.object_id in (old, base) and err.value.object_id in str(err.value)


def test_missing_chunk_names_the_tensor(tmp_path):
    commit, cid, _ = _two_tensor_repo(tmp_path)
    with Repository(tmp_path) as repo:
        object_path(repo, cid).unlink()
        with pytest.raises(ObjectNotFoundError, match="encoder.weight"):
            repo.load_arrays(commit)
        assert any("encoder.weight" in e and "missing" in e for e in repo.fsck()["errors"])


def test_corrupt_commit_object_is_refused(tmp_path):
    commit, _, _ = _two_tensor_repo(tmp_path)
    with Repository(tmp_path) as repo:
        path = repo.store.root / "objects" / "commits" / commit[:2] / commit[2:]
        text = path.read_bytes().replace(b"two tensors", b"two tensorz")
        path.write_bytes(text)
        with pytest.raises(CorruptObjectError, match=commit):
            repo.get_weights(commit)
        with pytest.raises(CorruptObjectError, match=commit):
            repo.log()
        assert not repo.fsck()["ok"]


def test_objects_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failure between the temp write and the rename leaves neither the object nor a temp file."""
    from coral.store import local

    w = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:

        def failing_replace(src, dst):
            raise OSError("simulated crash before the rename")

        monkeypatch.setattr(local.os, "replace", failing_replace)
        with pytest.raises(OSError, match="simulated"):
            repo.stage_weights({"w": w})
        monkeypatch.undo()
        assert chunk_ids(repo) == set()
        assert repo.store.temp_files() == []
        repo.stage_weights({"w": w})  # and the same write succeeds afterwards
        h = repo.commit("ok")
        assert repo.load_arrays(h)["w"].tobytes() == w.tobytes()


def test_memory_repositories_with_distinct_names_are_independent():
    a = Repository(f"memory://{uuid.uuid4().hex}", init=True)
    b = Repository(f"memory://{uuid.uuid4().hex}", init=True)
    a.stage_weights({"w": np.ones(3, np.float32)})
    a.commit("only in a")
    assert b.log() == []
    assert len(a.log()) == 1
