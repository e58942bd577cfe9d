"""``load_arrays(mmap=True)``: raw chunks are mapped from their files (no copy), every chunk is still
hash-checked, and whatever cannot be mapped is decoded into place, so the result is always exact."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from coral import Repository
from coral.codecs import parse_header
from coral.codecs.chunk import CODEC_PLANES, PAGE_ALIGN, _pack, raw_header
from coral.errors import CorruptObjectError, InvalidArgumentError
from coral.objects import CHUNK_BYTES, chunk_key, mapping

linux_only = pytest.mark.skipif(not mapping.available(), reason="chunk mapping needs Linux")


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "multi": rng.standard_normal(3 * CHUNK_BYTES // 4 + 123).astype(np.float32),  # four chunks, short tail
        "single": rng.standard_normal(300_000).astype(np.float32),
        "bf16": rng.standard_normal((700, 1000)).astype(ml_dtypes.bfloat16),
        "fp8": rng.standard_normal(2_000_000).astype(ml_dtypes.float8_e4m3fn),
        "c128": (rng.standard_normal(300_000) + 1j).astype(np.complex128),
        "flags": rng.random(5_000_000) > 0.5,
        "strided": rng.standard_normal((2000, 600)).T,  # non-contiguous input
        "big_endian": rng.standard_normal(200_000).astype(">f8"),
        "nan_payloads": np.frombuffer(np.arange(2_000_000, dtype=np.uint32) | 0x7F800001, dtype=np.float32),
        "bias": rng.standard_normal(64).astype(np.float32),  # packed with other small tensors
        "empty": np.zeros((0, 5), np.float32),
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    b = np.ascontiguousarray(b)
    return a.shape == b.shape and a.tobytes() == b.astype(b.dtype.newbyteorder("=")).tobytes()


def _mapped_files() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/chunks/" in line}


def test_mmap_load_is_exact_for_new_and_repacked_commits(tmp_path):
    first = _state()
    with np.errstate(invalid="ignore"):
        second = {k: (v + 1 if v.dtype.kind in "fc" and v.size else v) for k, v in first.items()}
    with Repository(tmp_path, init=True) as repo:
        a = repo.commit_weights(first, "a")
        b = repo.commit_weights(second, "b")
        repo.repack(max_commits=1)  # a's chunks become deltas and compressed keyframes, b's stay raw
        for commit, state in ((a, first), (b, second)):
            got = repo.load_arrays(commit, mmap=True)
            assert list(got) == list(repo.load_arrays(commit))
            for name, want in state.items():
                assert got[name].dtype == want.dtype.newbyteorder("="), name
                assert _same(got[name], want), name


@linux_only
def test_raw_chunks_are_mapped_not_copied(tmp_path):
    w = np.random.default_rng(1).standard_normal(4 * CHUNK_BYTES // 4).astype(np.float32)  # 16 MiB
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": w}, "one")
        chunks = repo.get_commit(cid).tree["w"].chunks
        for c in chunks:  # several-chunk tensors keep their raw bodies page-aligned
            head = parse_header(repo.store.get_range(chunk_key(c), 0, 64))
            assert head.body == PAGE_ALIGN
        before = _rss_anon()
        got = repo.load_arrays(cid, mmap=True)["w"]
        grown = _rss_anon() - before
        files = _mapped_files()
        assert all(any(f.endswith(c[2:]) for f in files) for c in chunks)  # each chunk file is mapped
        assert grown < w.nbytes // 4, f"anonymous memory grew by {grown} bytes for a {w.nbytes}-byte tensor"
        assert got.tobytes() == w.tobytes()


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


@linux_only
def test_writing_to_a_mapped_array_never_reaches_the_repository(tmp_path):
    w = np.random.default_rng(2).standard_normal(2 * CHUNK_BYTES // 4).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": w}, "one")
        got = repo.load_arrays(cid, mmap=True)["w"]
        got[:] = 7.0
        assert repo.load_arrays(cid, mmap=True)["w"].tobytes() == w.tobytes()
        assert repo.fsck()["ok"]


_FLIPS = {  # where: (tensor, chunk index, byte offset in the file; negative from the end)
    "body": ("multi", 1, PAGE_ALIGN + 1000),
    "reserved-header-byte": ("multi", 0, 27),
    "padding": ("multi", 0, 2000),
    "seal-sum": ("multi", 0, -3),
    "single-chunk-header": ("single", 0, 26),
}


@linux_only
@pytest.mark.parametrize("where", list(_FLIPS))
def test_a_flipped_byte_anywhere_in_a_mapped_chunk_is_named(tmp_path, where):
    """The body is BLAKE3-checked through the mapping; the store's seal covers the header and padding too,
    so damage that fsck and plain loads report is reported by a mapped load as well."""
    rng = np.random.default_rng(8)
    state = {
        "multi": rng.standard_normal(2 * CHUNK_BYTES // 4).astype(np.float32),
        "single": rng.standard_normal(300_000).astype(np.float32),
    }
    tensor, index, at = _FLIPS[where]
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights(state, "one")
        victim = repo.get_commit(cid).tree[tensor].chunks[index]
        path = repo.store.root / "objects" / chunk_key(victim)
        data = bytearray(path.read_bytes())
        data[at] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptObjectError, match=victim[2:]) as info:
            repo.load_arrays(cid, mmap=True)
        assert tensor in str(info.value)


@linux_only
def test_a_truncated_chunk_is_not_mapped_and_is_named(tmp_path):
    w = np.random.default_rng(4).standard_normal(2 * CHUNK_BYTES // 4).astype(np.float32)
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": w}, "one")
        victim = repo.get_commit(cid).tree["w"].chunks[0]
        path = repo.store.root / "objects" / chunk_key(victim)
        path.write_bytes(path.read_bytes()[: PAGE_ALIGN + 4096])
        with pytest.raises(CorruptObjectError, match=victim):
            repo.load_arrays(cid, mmap=True)


def test_unaligned_and_compressed_chunks_are_decoded_into_place(tmp_path):
    """A chunk first stored on its own (raw body right after the header) and reused by a bigger tensor
    cannot be mapped at a page boundary; it is read into its place, beside mapped neighbours."""
    rng = np.random.default_rng(5)
    alone = rng.standard_normal(CHUNK_BYTES // 4).astype(np.float32)  # exactly one chunk
    zeros = np.zeros(CHUNK_BYTES // 4, np.float32)  # compresses: stored as planes+zstd
    with Repository(tmp_path, init=True) as repo:
        repo.commit_weights({"alone": alone}, "one")
        mixed = np.concatenate([alone, rng.standard_normal(CHUNK_BYTES // 4).astype(np.float32), zeros, alone[:99]])
        cid = repo.commit_weights({"mixed": mixed}, "two")
        chunks = repo.get_commit(cid).tree["mixed"].chunks
        heads = [parse_header(repo.store.get_range(chunk_key(c), 0, 64)) for c in chunks]
        assert heads[0].body != PAGE_ALIGN and heads[1].body == PAGE_ALIGN and heads[2].codec == CODEC_PLANES
        assert repo.load_arrays(cid, mmap=True)["mixed"].tobytes() == mixed.tobytes()
        assert repo.load_arrays(cid, mmap=True, names=["mixed"])["mixed"].tobytes() == mixed.tobytes()


def test_stores_without_files_fall_back_to_reading():
    w = np.random.default_rng(6).standard_normal(2 * CHUNK_BYTES // 4).astype(np.float32)
    repo = Repository("memory://mmap-fallback", init=True)
    cid = repo.commit_weights({"w": w}, "one")
    assert repo.load_arrays(cid, mmap=True)["w"].tobytes() == w.tobytes()


def test_mmap_must_be_a_bool(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": np.ones(3, np.float32)}, "one")
        with pytest.raises(InvalidArgumentError, match="mmap"):
            repo.load_arrays(cid, mmap="yes")  # type: ignore[arg-type]


def test_body_offsets_other_than_a_page_on_raw_chunks_are_refused():
    head = parse_header(raw_header(4, 4096, aligned=True))
    assert head.body == PAGE_ALIGN and len(raw_header(4, 4096, aligned=True)) == PAGE_ALIGN
    with pytest.raises(ValueError, match="offset"):
        parse_header(_pack(0, 4, 0, 4096, 0, None, 100))
    with pytest.raises(ValueError, match="offset"):
        parse_header(_pack(CODEC_PLANES, 4, 0, 4096, 1, None, PAGE_ALIGN))


def test_where_mapping_is_unavailable_it_reads_instead(tmp_path, monkeypatch):
    w = np.random.default_rng(7).standard_normal(2 * CHUNK_BYTES // 4).astype(np.float32)
    monkeypatch.setattr(mapping, "available", lambda: False)  # as on macOS or Windows
    with Repository(tmp_path, init=True) as repo:
        cid = repo.commit_weights({"w": w}, "one")
        got = repo.load_arrays(cid, mmap=True)["w"]
        assert got.tobytes() == w.tobytes()
        assert not any(c[2:] in f for c in repo.get_commit(cid).tree["w"].chunks for f in _mapped_files())
