"""Big raw chunks are read through one open file each (header, seal and body), by a few threads draining
one queue: the bytes come back exact, and damage anywhere in the file is still found and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from coral import Repository
from coral.codecs.chunk import HEADER_SIZE, PAGE_ALIGN
from coral.errors import CorruptObjectError
from coral.objects.manifest import CHUNK_BYTES
from coral.store import seal


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        # 2.5 chunks of noise (raw: nothing to compress), a small tensor and a packed one beside it
        "big": rng.standard_normal(CHUNK_BYTES * 5 // 8, dtype=np.float32),
        "bias": rng.standard_normal(1000).astype(np.float16),
        "step": np.array([7], dtype=np.int64),
    }


def _chunk_path(repo: Repository, cid: str, index: int) -> tuple[str, Path]:
    chunk = repo.get_commit(cid).tree["big"].chunks[index]
    return chunk, repo.store.root / "objects" / "chunks" / chunk[:2] / chunk[2:]


def test_every_tensor_comes_back_bit_exact_eagerly_and_lazily(tmp_path):
    state = _state()
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights(state, "one")
        eager = repo.load_arrays(cid)
        lazy = {name: t.data for name, t in repo.get_weights(cid).items()}
    for got in (eager, lazy):
        assert set(got) == set(state)
        for name, want in state.items():
            assert got[name].dtype == want.dtype and got[name].tobytes() == want.tobytes(), name


@pytest.mark.parametrize(
    "where, match",
    [
        ("padding", "integrity check"),  # a byte no decoder reads: only the seal sees it
        ("body", "does not match its hash"),
        ("truncated", "too short|seal is damaged"),
    ],
)
def test_damage_to_a_big_raw_chunk_is_found_and_names_the_tensor(tmp_path, where, match):
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights(_state(), "one")
        chunk, path = _chunk_path(repo, cid, 1)
        data = bytearray(path.read_bytes())
        assert len(data) == PAGE_ALIGN + CHUNK_BYTES + seal.SIZE  # raw, body page-aligned
        if where == "padding":
            data[HEADER_SIZE + 100] ^= 0x01
        elif where == "body":
            data[PAGE_ALIGN + 12345] ^= 0x01
        else:
            data = data[: PAGE_ALIGN + 1000]
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptObjectError, match=match) as err:
            repo.load_arrays(cid)
        assert chunk in str(err.value) and "big" in str(err.value)
        with pytest.raises(CorruptObjectError, match=chunk):
            _ = repo.get_weights(cid)["big"].data
        assert not repo.fsck()["ok"]
