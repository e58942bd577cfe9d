"""The local store's integrity seal: xxh3 now (catches reordered words), and the word sum of older
repositories still read (``tests/fixtures/seal_v1_repo`` was written by the code before the change)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from coral import Repository
from coral.errors import CorruptObjectError
from coral.store import LocalStore, seal

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "seal_v1_repo"
# what the fixture's one commit holds: name -> (dtype, shape, sha256 of the bytes)
EXPECTED = {
    "layer.weight": ("float32", (16, 16), "b4925e7ab450610f0996fb5700e2b9cda8e3a8d98983df9659a9d9d6b952397b"),
    "layer.bias": ("float16", (16,), "6a6d1c1a88a06b74820ccbd0eb82e23df7af83a6d07974a61a592e1013cff71f"),
    "emb": ("int32", (100, 60), "1ed4a7e9f6128aee7e69c6cd71a2697d48797201f9b2695ec636ac02ae51def3"),
}
KEY = "chunks/ab/" + "c" * 62


def _magics(root: Path) -> set[bytes]:
    files = [p for p in (root / ".coral" / "objects").rglob("*") if p.is_file()]
    return {p.read_bytes()[-seal.SIZE :][:4] for p in files}


def _reseal_as_word_sum(path: Path) -> None:
    """Rewrite an object file's seal in version 1's format (as the code before xxh3 wrote it)."""
    data = path.read_bytes()[: -seal.SIZE]
    path.write_bytes(data + seal.RECORD.pack(seal.MAGIC_WORD_SUM, len(data), seal.word_sum([data])))


def test_a_repository_written_with_the_word_sum_seal_still_loads(tmp_path):
    repo_dir = tmp_path / "old"
    shutil.copytree(FIXTURE, repo_dir)
    assert _magics(repo_dir) == {seal.MAGIC_WORD_SUM}  # the fixture really is in the old format
    with Repository(repo_dir) as repo:
        arrays = repo.load_arrays("HEAD")
        assert set(arrays) == set(EXPECTED)
        for name, (dtype, shape, digest) in EXPECTED.items():
            got = arrays[name]
            assert (str(got.dtype), got.shape) == (dtype, shape), name
            assert hashlib.sha256(got.tobytes()).hexdigest() == digest, name
        assert repo.fsck()["ok"]
        # new objects get the new seal, beside the old ones, and both read back
        arrays["emb"] = arrays["emb"] + 1
        new = repo.commit_weights(arrays, "on top of the old format")
        assert repo.load_arrays(new)["emb"].tobytes() == (arrays["emb"]).tobytes()
        assert repo.fsck()["ok"]
    assert _magics(repo_dir) == {seal.MAGIC_WORD_SUM, seal.MAGIC_XXH3}


def test_damage_to_an_object_with_the_old_seal_is_still_found(tmp_path):
    repo_dir = tmp_path / "old"
    shutil.copytree(FIXTURE, repo_dir)
    victim = max((p for p in (repo_dir / ".coral" / "objects" / "chunks").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[20] ^= 0x01  # a header byte
    victim.write_bytes(bytes(data))
    with Repository(repo_dir) as repo:
        assert not repo.fsck()["ok"]


def test_old_seal_is_checked_by_every_read_path(tmp_path):
    store = LocalStore(tmp_path / "s")
    payload = os.urandom(64 * 1024 + 5)
    store.put(KEY, payload)
    path = tmp_path / "s" / "objects" / KEY
    _reseal_as_word_sum(path)
    assert store.get(KEY) == payload
    out = bytearray(len(payload) - 8)
    assert store.get_into(KEY, 8, memoryview(out)) == len(out) and bytes(out) == payload[8:]
    fd = store.open_file(KEY)
    try:
        check = store.payload_check(KEY, fd)
    finally:
        os.close(fd)
    assert check is not None
    check([payload[:100], payload[100:]])
    with pytest.raises(CorruptObjectError):
        check([payload[:-1] + bytes([payload[-1] ^ 1])])


def _swap_words(payload: bytes, a: int, b: int) -> bytes:
    data = bytearray(payload)
    data[a : a + 8], data[b : b + 8] = payload[b : b + 8], payload[a : a + 8]
    return bytes(data)


def test_two_swapped_words_are_detected(tmp_path):
    store = LocalStore(tmp_path / "s")
    payload = bytes(range(256)) * 16
    store.put(KEY, payload)
    path = tmp_path / "s" / "objects" / KEY
    swapped = _swap_words(payload, 64, 1024)
    assert swapped != payload
    assert seal.word_sum([swapped]) == seal.word_sum([payload])  # what the old seal could not see
    path.write_bytes(swapped + path.read_bytes()[len(payload) :])
    with pytest.raises(CorruptObjectError, match="integrity check"):
        store.get(KEY)
    with pytest.raises(CorruptObjectError, match="integrity check"):
        store.get_into(KEY, 0, memoryview(bytearray(len(payload))))
    fd = store.open_file(KEY)
    try:
        check = store.payload_check(KEY, fd)
    finally:
        os.close(fd)
    with pytest.raises(CorruptObjectError):
        check([swapped])


def test_swapped_words_in_a_chunk_are_reported_by_loads_and_fsck(tmp_path):
    w = np.arange(70_000, dtype=np.float32)  # one raw or compressed chunk of its own
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": w}, "one")
        victim = repo.get_commit(cid).tree["w"].chunks[0]
        path = repo.store.root / "objects" / "chunks" / victim[:2] / victim[2:]
        data = path.read_bytes()
        body = len(data) - seal.SIZE
        a, b = body - 16, body - 8  # the last two words of the payload, which differ
        assert data[a : a + 8] != data[b : b + 8]
        path.write_bytes(_swap_words(data, a, b))
        with pytest.raises(CorruptObjectError, match=victim):
            repo.load_arrays(cid)
        assert not repo.fsck()["ok"]


def test_an_unknown_seal_version_is_damage(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.put(KEY, b"x" * 100)
    path = tmp_path / "s" / "objects" / KEY
    data = bytearray(path.read_bytes())
    data[-seal.SIZE : -seal.SIZE + 4] = b"CRL9"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match="seal is damaged"):
        store.get(KEY)
    assert struct.calcsize("<4sQQ") == seal.SIZE
