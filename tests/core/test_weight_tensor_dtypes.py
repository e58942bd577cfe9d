"""Every dtype Coral stores comes back bit for bit: through WeightTensor and through a real repository.

Bit patterns are built from raw bytes (never through float arithmetic), so NaN payloads, signalling NaNs,
-0.0, infinities and subnormals are all in the data and a canonicalising step anywhere would show.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from coral import Repository, WeightMetadata, WeightTensor
from coral.core.dtypes import DTYPES, dtype_from_name, dtype_name
from coral.errors import InvalidArgumentError, UnsupportedDtypeError

REQUIRED = [
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
]
ALL = sorted(DTYPES)
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64, 16: np.uint64}


def random_bits(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` elements of dtype ``name`` with uniformly random bit patterns (bool: 0/1 only)."""
    rng = np.random.default_rng(seed)
    dt = dtype_from_name(name)
    if name == "bool":
        return rng.integers(0, 2, n).astype(bool)
    return np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).copy()


def special_values(name: str) -> np.ndarray:
    """NaN payloads (quiet and signalling, both signs), -0.0, +-inf and extremes, as exact bit patterns."""
    dt = dtype_from_name(name)
    bits = {
        "float16": [0x7E00, 0x7C01, 0xFE01, 0x7DFF, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x7BFF],
        "float32": [
            0x7FC00000,
            0x7FC00123,
            0xFFA00001,
            0x7F800001,
            0x80000000,
            0x7F800000,
            0xFF800000,
            0x00000001,
        ],
        "float64": [
            0x7FF8000000000000,
            0x7FF8DEADBEEF0001,
            0xFFF0000000000001,
            0x8000000000000000,
            0x7FF0000000000000,
            0xFFF0000000000000,
            0x0000000000000001,
        ],
        "bfloat16": [0x7FC0, 0x7FC1, 0xFF81, 0x8000, 0x7F80, 0xFF80, 0x0001],
    }.get(name)
    if bits is not None:
        return np.array(bits, dtype=_UINT[dt.itemsize]).view(dt)
    if name.startswith("complex"):
        parts = special_values("float32" if name == "complex64" else "float64")
        pairs = np.stack([parts, np.roll(parts, 1)], axis=-1)  # (real, imag) bit patterns, moved not computed
        return np.ascontiguousarray(pairs).view(dt).reshape(-1)
    if dt.itemsize == 1 and name != "bool":  # every 8-bit pattern, NaNs and negative zeros included
        return np.arange(256, dtype=np.uint8).view(dt)
    if name == "bool":
        return np.array([True, False, True], dtype=bool)
    info = np.iinfo(dt)
    return np.array([info.min, info.max, 0, -1 if info.min < 0 else 1], dtype=dt)


def bits_of(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def test_required_dtypes_are_supported():
    missing = [n for n in REQUIRED if n not in DTYPES]
    assert not missing, f"dtypes Coral must store: {missing}"
    assert DTYPES["bfloat16"] == np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("name", ALL)
def test_dtype_names_roundtrip(name):
    assert dtype_name(dtype_from_name(name)) == name


@pytest.mark.parametrize("name", ALL)
def test_weight_tensor_keeps_bits_and_metadata(name):
    data = random_bits(name, 257)
    wt = WeightTensor(data, WeightMetadata("layer.w", data.shape, name, layer_type="Linear"))
    assert wt.metadata.dtype == name and wt.shape == (257,) and wt.nbytes == data.nbytes
    assert wt.dtype == dtype_from_name(name)
    assert bits_of(wt.data) == bits_of(data)
    same = WeightTensor(data.copy(), name="other")
    assert wt == same and wt.compute_hash() == same.compute_hash()


def test_weight_tensor_equality_is_bitwise_not_numeric():
    a = np.array([0.0, np.nan], dtype=np.float32)
    b = np.array([-0.0, np.nan], dtype=np.float32)
    assert WeightTensor(a) != WeightTensor(b)  # numerically 0.0 == -0.0, but the bits differ
    c = a.copy()
    c.view(np.uint32)[1] = 0x7FC00001  # another NaN payload
    assert WeightTensor(a) != WeightTensor(c)
    assert WeightTensor(a).compute_hash() != WeightTensor(c).compute_hash()
    assert WeightTensor(a) == WeightTensor(a.copy())  # NaN == NaN when the bits are equal


def test_weight_tensor_refuses_what_it_cannot_store_exactly():
    with pytest.raises(UnsupportedDtypeError):
        WeightTensor(np.array(["a", "b"]))
    with pytest.raises(UnsupportedDtypeError):
        WeightTensor(np.array([object()], dtype=object))
    with pytest.raises(InvalidArgumentError, match="shape"):
        WeightTensor(np.zeros(3, np.float32), WeightMetadata("w", (4,), "float32"))
    with pytest.raises(InvalidArgumentError, match="dtype"):
        WeightTensor(np.zeros(3, np.float32), WeightMetadata("w", (3,), "float16"))
    with pytest.raises(InvalidArgumentError):
        WeightTensor()


@pytest.mark.parametrize(
    "name",
    [
        "float16",
        "float32",
        "float64",
        "int16",
        "int32",
        "int64",
        "uint16",
        "uint32",
        "uint64",
        "complex64",
        "complex128",
    ],
)
def test_big_endian_input_is_stored_little_endian_with_identical_values(name):
    little = np.concatenate([special_values(name), random_bits(name, 50)])
    big = little.byteswap().view(little.dtype.newbyteorder(">"))  # pure byte operations, no float math
    wt = WeightTensor(big)
    assert wt.data.dtype.byteorder in ("<", "=", "|")
    assert wt.metadata.dtype == name
    assert bits_of(wt.data) == bits_of(little)


def test_non_contiguous_inputs_keep_shape_and_values():
    base = random_bits("float32", 120).reshape(10, 12)
    for view in (base[::2, ::3], base.T, base[:, 5], np.asfortranarray(base)):
        wt = WeightTensor(view)
        assert wt.shape == view.shape
        assert wt.data.flags.c_contiguous
        assert bits_of(wt.data) == bits_of(view)


def _cases():
    for name in ALL:
        yield f"{name}/random", random_bits(name, 1000, seed=len(name))
        yield f"{name}/special", special_values(name)
        yield f"{name}/0d", random_bits(name, 1, seed=3).reshape(())
        yield f"{name}/empty", random_bits(name, 0).reshape(0, 7)
        yield f"{name}/empty3d", random_bits(name, 0).reshape(2, 0, 3)
        yield f"{name}/strided", random_bits(name, 240, seed=5).reshape(12, 20)[1::3, ::-2]
    for name in ("float16", "float32", "float64", "bfloat16", "complex128", "int64", "uint32"):
        little = np.concatenate([special_values(name), random_bits(name, 100)])
        if name != "bfloat16":
            yield f"{name}/big-endian", little.byteswap().view(little.dtype.newbyteorder(">"))


def _expected(a: np.ndarray) -> bytes:
    if a.dtype.byteorder == ">":
        return np.ascontiguousarray(a).byteswap().tobytes()
    return bits_of(a)


@pytest.mark.parametrize("store_kind", ["file", "memory"])
def test_every_dtype_and_edge_case_roundtrips_through_a_repository(tmp_path, store_kind):
    cases = dict(_cases())
    path = tmp_path / "repo" if store_kind == "file" else f"memory://dtypes-{tmp_path.name}"
    with Repository(path, init=True) as repo:
        repo.stage_weights(cases)
        commit = repo.commit("every dtype")
    with Repository(path) as fresh:  # a second handle: nothing comes from an in-memory cache
        back = fresh.get_weights(commit)
        assert set(back) == set(cases)
        for key, original in cases.items():
            wt = back[key]
            dt_name = dtype_name(original.dtype)
            assert wt.metadata.dtype == dt_name, key
            assert wt.shape == original.shape, key
            data = wt.data
            assert data.dtype == dtype_from_name(dt_name), key
            assert data.shape == original.shape, key
            assert data.tobytes() == _expected(original), f"{key} changed bits"
        arrays = fresh.load_arrays(commit, names=["float32/special"])
        assert arrays["float32/special"].tobytes() == _expected(cases["float32/special"])


def test_weight_tensor_values_roundtrip_with_layer_type(tmp_path):
    with Repository(tmp_path, init=True) as repo:
        wt = WeightTensor(
            random_bits("bfloat16", 64).reshape(8, 8), WeightMetadata("enc.w", (8, 8), "bfloat16", "Linear")
        )
        repo.stage_weights([wt])
        h = repo.commit("iterable of tensors")
        back = repo.get_weights(h)["enc.w"]
        assert back.metadata.layer_type == "Linear"
        assert back == wt


@pytest.mark.parametrize("spelling", ["float64", "<f8", ">f8", "=f8", np.float64, np.dtype(">f8")])
def test_metadata_accepts_any_spelling_of_a_dtype(spelling):
    meta = WeightMetadata("w", (3,), spelling)
    assert meta.dtype == "float64"
    wt = WeightTensor(np.arange(3, dtype=">f8"), meta)  # big-endian data, stored little-endian
    assert wt.data.dtype == np.dtype("<f8") and wt.data.tolist() == [0.0, 1.0, 2.0]
