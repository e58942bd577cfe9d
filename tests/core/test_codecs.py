"""Property tests: every chunk codec (raw, planes+zstd, delta-xor, delta-sub) inverts exactly, on any bytes."""

from __future__ import annotations

import numpy as np
import pytest
from coral.codecs import (
    CODEC_DELTA_SUB,
    CODEC_DELTA_XOR,
    CODEC_PLANES,
    CODEC_RAW,
    decode_chunk,
    encode_chunk,
    encode_delta,
    parse_header,
)
from coral.codecs import delta as delta_codec
from coral.codecs import planes as planes_codec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ITEMSIZES = [1, 2, 4, 8, 16]
BASE_ID = "ab" * 32


def _shape(data: bytes, itemsize: int, mode: str) -> bytes:
    """Turn random bytes into random, low-entropy (zero high bytes) or constant data of the same length."""
    if mode == "random" or not data:
        return data
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize).copy()
    if mode == "lowbits":
        if itemsize == 1:
            arr &= 0x03
        else:
            arr[:, itemsize // 2 :] = 0
    else:  # constant
        arr[:] = arr[0]
    return arr.tobytes()


@st.composite
def chunks(draw, min_elems: int = 0, max_elems: int = 700, modes=("random", "lowbits", "constant")):
    itemsize = draw(st.sampled_from(ITEMSIZES))
    n = draw(st.integers(min_elems, max_elems))
    raw = draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))
    return _shape(raw, itemsize, draw(st.sampled_from(modes))), itemsize


@st.composite
def chunk_pairs(draw):
    """(data, base, itemsize): base is random; data is base with a sparse or dense perturbation."""
    data, itemsize = draw(chunks(min_elems=1))
    n = len(data) // itemsize
    noise = draw(st.binary(min_size=len(data), max_size=len(data)))
    how = draw(st.sampled_from(["unrelated", "few-elements", "low-bytes", "equal"]))
    a = np.frombuffer(data, dtype=np.uint8).reshape(n, itemsize).copy()
    b = a.copy()
    noise_arr = np.frombuffer(noise, dtype=np.uint8).reshape(n, itemsize)
    if how == "unrelated":
        b = noise_arr.copy()
    elif how == "few-elements":
        idx = draw(st.lists(st.integers(0, n - 1), max_size=5))
        b[idx] = noise_arr[idx]
    elif how == "low-bytes":
        b[:, : max(1, itemsize // 2)] ^= noise_arr[:, : max(1, itemsize // 2)]
    return a.tobytes(), b.tobytes(), itemsize


def _decoded(blob: bytes, base: bytes | None = None) -> bytes:
    get_base = None if base is None else (lambda _id: np.frombuffer(base, dtype=np.uint8))
    return decode_chunk(blob, get_base).tobytes()


@SETTINGS
@given(chunks())
def test_raw_codec_roundtrips(case):
    data, itemsize = case
    blob = encode_chunk(data, itemsize, compress=False)
    head = parse_header(blob)
    assert head.codec == CODEC_RAW and head.length == len(data) and head.base is None and head.depth == 0
    assert _decoded(blob) == data


@SETTINGS
@given(chunks(), st.sampled_from([1, 3]))
def test_compressed_chunk_roundtrips_and_is_never_bigger_than_raw(case, level):
    data, itemsize = case
    blob = encode_chunk(data, itemsize, level=level, compress=True)
    head = parse_header(blob)
    assert head.codec in (CODEC_RAW, CODEC_PLANES)
    assert len(blob) <= len(encode_chunk(data, itemsize, compress=False))
    assert _decoded(blob) == data


@SETTINGS
@given(chunks(min_elems=512, max_elems=2000, modes=("lowbits", "constant")))
def test_planes_codec_is_chosen_for_compressible_data_and_roundtrips(case):
    data, itemsize = case
    blob = encode_chunk(data, itemsize, compress=True)
    head = parse_header(blob)
    assert head.codec == CODEC_PLANES
    assert head.mask != 0
    assert len(blob) < len(encode_chunk(data, itemsize, compress=False))
    assert _decoded(blob) == data


@SETTINGS
@given(chunks(), st.booleans())
def test_planes_body_roundtrips_with_and_without_sampling(case, sample):
    data, itemsize = case
    mask, body = planes_codec.encode_planes(data, itemsize, 1, sample=sample)
    out = np.empty(len(data), dtype=np.uint8)
    planes_codec.decode_planes(memoryview(body), itemsize, mask, len(data), out)
    assert out.tobytes() == data


def test_planes_sampling_skips_incompressible_planes_of_big_chunks():
    rng = np.random.default_rng(0)
    n = 1 << 20
    arr = np.zeros((n, 4), dtype=np.uint8)
    arr[:, :3] = rng.integers(0, 256, (n, 3), dtype=np.uint8)  # three noise planes, one zero plane
    mask, body = planes_codec.encode_planes(arr.tobytes(), 4, 1)
    assert mask == 0b1000
    out = np.empty(arr.size, dtype=np.uint8)
    planes_codec.decode_planes(memoryview(body), 4, mask, arr.size, out)
    assert out.tobytes() == arr.tobytes()


@pytest.mark.parametrize("itemsize", ITEMSIZES)
@SETTINGS
@given(data=st.data())
def test_delta_residuals_invert_exactly(itemsize, data):
    n = data.draw(st.integers(0, 300))
    a = data.draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))
    b = data.draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))
    out = np.empty(len(a), dtype=np.uint8)
    delta_codec.xor_apply(delta_codec.xor_residual(a, b, itemsize), b, itemsize, out)
    assert out.tobytes() == a
    out = np.empty(len(a), dtype=np.uint8)
    delta_codec.sub_apply(delta_codec.sub_residual(a, b, itemsize), b, itemsize, out)
    assert out.tobytes() == a
    in_place = np.frombuffer(b, dtype=np.uint8).copy()  # out is the base: the scratch-free path cannot run
    delta_codec.sub_apply(delta_codec.sub_residual(a, b, itemsize), in_place, itemsize, in_place)
    assert in_place.tobytes() == a


@SETTINGS
@given(chunk_pairs(), st.booleans(), st.integers(0, 6))
def test_delta_chunk_roundtrips_against_its_base(pair, is_float, base_depth):
    data, base, itemsize = pair
    blob = encode_delta(data, base, BASE_ID, base_depth, itemsize, is_float=is_float)
    head = parse_header(blob)
    assert head.codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB)
    assert head.base == BASE_ID and head.depth == base_depth + 1 and head.length == len(data)
    assert _decoded(blob, base) == data


def test_delta_sub_wins_on_counters_and_roundtrips():
    base = np.arange(100_000, dtype=np.int64)
    data = base + 1  # every element moved by one: the integer difference is constant
    blob = encode_delta(data.tobytes(), base.tobytes(), BASE_ID, 0, 8, is_float=False)
    assert parse_header(blob).codec == CODEC_DELTA_SUB
    assert len(blob) < data.nbytes // 50
    assert _decoded(blob, base.tobytes()) == data.tobytes()


@pytest.mark.parametrize("is_float", [True, False])
def test_delta_xor_wins_on_bit_flips_and_roundtrips(is_float):
    base = np.frombuffer(np.random.default_rng(2).bytes(200_000), dtype=np.uint32)
    data = base ^ np.uint32(0b101)  # the same two bits flipped everywhere: XOR is constant, a difference is not
    blob = encode_delta(data.tobytes(), base.tobytes(), BASE_ID, 0, 4, is_float=is_float)
    assert parse_header(blob).codec == CODEC_DELTA_XOR
    assert len(blob) < data.nbytes // 50
    assert _decoded(blob, base.tobytes()) == data.tobytes()


def test_delta_on_nearby_floats_keeps_nan_payloads_and_signed_zeros():
    rng = np.random.default_rng(1)
    base = rng.standard_normal(50_000).astype(np.float32)
    data = base.copy()
    data[::7] = np.nextafter(data[::7], np.float32(np.inf))
    data.view(np.uint32)[:4] = [0x7FC00001, 0xFFA00000, 0x80000000, 0x7F800000]
    blob = encode_delta(data.tobytes(), base.tobytes(), BASE_ID, 0, 4, is_float=True)
    assert parse_header(blob).codec in (CODEC_DELTA_XOR, CODEC_DELTA_SUB)  # whichever residual is smaller
    assert len(blob) < data.nbytes // 20
    assert _decoded(blob, base.tobytes()) == data.tobytes()


def test_malformed_chunks_are_refused():
    blob = encode_chunk(bytes(range(256)) * 4, 4, compress=True)
    with pytest.raises(ValueError):
        decode_chunk(blob[:10])
    with pytest.raises(ValueError):
        decode_chunk(b"XXXX" + blob[4:])
    with pytest.raises(ValueError):
        decode_chunk(blob[:-1])  # truncated body
    with pytest.raises(ValueError):
        decode_chunk(blob + b"\x00")  # trailing garbage
    delta = encode_delta(b"\x01" * 64, b"\x02" * 64, BASE_ID, 0, 4, is_float=True)
    with pytest.raises(ValueError, match="base"):
        decode_chunk(delta)  # no way to fetch its base
    with pytest.raises(ValueError):
        decode_chunk(delta, lambda _id: np.zeros(32, dtype=np.uint8))  # base of the wrong length
    with pytest.raises(ValueError):
        encode_delta(b"\x01" * 64, b"\x02" * 32, BASE_ID, 0, 4, is_float=True)


def test_save_path_keeps_noise_raw_and_compresses_what_halves():
    from coral.codecs import encode_chunk_parts
    from coral.codecs.planes import entropy_estimates

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(1 << 18).astype(np.float32)  # 1 MiB of float weights
    sparse = np.zeros(1 << 18, dtype=np.float32)
    sparse[::97] = rng.standard_normal(sparse[::97].size)
    for data, compressed in ((noise, False), (sparse, True)):
        parts = encode_chunk_parts(memoryview(data).cast("B"), 4, min_saving=0.5)
        assert (parse_header(parts[0]).codec == CODEC_PLANES) is compressed
        assert len(b"".join(bytes(p) for p in parts)) < data.nbytes / 2 or not compressed
    # plane histograms stop once the kept fraction is already over the limit: noise planes come first
    full = entropy_estimates(memoryview(noise).cast("B"), 4)
    early = entropy_estimates(memoryview(noise).cast("B"), 4, give_up_above=0.5)
    assert early[:2] == full[:2] and early[3] == 1.0 and full[3] < 0.5
