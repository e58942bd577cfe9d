"""Weights interchange: Coral's own safetensors reader/writer against the reference package, export/import of
commits, plugin dispatch, and `.pt` import that never unpickles arbitrary objects."""

from __future__ import annotations

import importlib.metadata
import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import coral
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as st_numpy
from coral import plugins
from coral.errors import MalformedFileError, PluginError, PrunedCommitError, UnsupportedDtypeError
from coral.hookspecs import hookimpl
from coral.interchange import SafetensorsReader, export_commit, import_file, load_file, save_file, write_file
from coral.interchange.safetensors_io import RAW_DTYPES_KEY, TensorSpec
from safetensors import safe_open


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical: dtype, shape and every byte (NaN payloads and -0.0 included)."""
    return a.dtype == b.dtype and a.shape == b.shape and bits(a) == bits(b)


def tricky_arrays() -> dict[str, np.ndarray]:
    """Every dtype Coral exports natively, with NaN payloads, signalling NaNs, -0.0, infinities and denormals."""
    f32 = np.array(
        [0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x7F800000, 0x00000001, 0x3F800000], dtype=np.uint32
    ).view(np.float32)
    f64 = np.array([0x7FF8000000000123, 0x8000000000000000, 0xFFF0000000000000, 1], dtype=np.uint64).view(
        np.float64
    )
    f16 = np.array([0x7E01, 0xFE00, 0x8000, 0x7C00, 0x0001], dtype=np.uint16).view(np.float16)
    bf16 = np.array([0x7FC1, 0xFF81, 0x8000, 0x7F80, 0x0001, 0x3F80], dtype=np.uint16).view(
        ml_dtypes.bfloat16
    )
    every_byte = np.arange(256, dtype=np.uint8)
    return {
        "f32": f32.reshape(7, 1),
        "f64": f64,
        "f16": f16,
        "bf16": bf16.reshape(2, 3),
        "fp8_e4m3": every_byte.view(ml_dtypes.float8_e4m3fn).reshape(16, 16),
        "fp8_e5m2": every_byte.view(ml_dtypes.float8_e5m2),
        "i8": np.array([-128, 127, 0], dtype=np.int8),
        "u8": every_byte,
        "i16": np.array([-32768, 32767], dtype=np.int16),
        "u16": np.array([65535, 1], dtype=np.uint16),
        "i32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        "u32": np.array([2**32 - 1], dtype=np.uint32),
        "i64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "c64": np.array([1 + 2j, complex(np.nan, -0.0)], dtype=np.complex64),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


# ---- the reader against files the reference package wrote ---------------------------------------------------


def test_files_written_by_reference_package_import_bit_exact(tmp_path):
    arrays = tricky_arrays()
    path = tmp_path / "ref.safetensors"
    st_numpy.save_file(arrays, str(path), metadata={"source": "reference"})
    with SafetensorsReader(path) as reader:
        assert reader.metadata == {"source": "reference"}
        loaded = dict(reader)
    assert loaded.keys() == arrays.keys()
    for name, a in arrays.items():
        assert same(loaded[name], a), name


def test_files_written_by_reference_torch_writer_import_bit_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from coral_torch.convert import tensor_to_numpy
    from safetensors.torch import save_file as torch_save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(5, 7, generator=g).to(torch.bfloat16),
        "fp8": torch.randn(33, generator=g).to(torch.float8_e4m3fn),
        "fp8b": torch.randn(9, generator=g).to(torch.float8_e5m2),
        "f16": torch.tensor([-0.0, float("nan"), float("inf")], dtype=torch.float16),
        "i64": torch.arange(-3, 3),
    }
    path = tmp_path / "torch.safetensors"
    torch_save_file(tensors, str(path))
    loaded = load_file(path)
    for name, t in tensors.items():
        assert same(loaded[name], tensor_to_numpy(t)), name


# ---- the writer against the reference reader --------------------------------------------------------------


def test_files_we_write_load_in_reference_package(tmp_path):
    arrays = tricky_arrays()
    path = save_file(arrays, tmp_path / "ours.safetensors", {"k": "v"})
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
        assert set(f.keys()) == set(arrays)
        for name in (
            "f32",
            "f64",
            "f16",
            "bf16",
            "i8",
            "u8",
            "i16",
            "u16",
            "i32",
            "u32",
            "i64",
            "u64",
            "bool",
            "c64",
            "scalar",
            "empty",
        ):
            got = f.get_tensor(name)
            assert got.shape == arrays[name].shape and bits(got) == bits(arrays[name]), name


def test_fp8_we_write_loads_in_reference_torch_reader(tmp_path):
    torch = pytest.importorskip("torch")
    arrays = tricky_arrays()
    path = save_file({k: arrays[k] for k in ("fp8_e4m3", "fp8_e5m2", "bf16")}, tmp_path / "fp8.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("fp8_e4m3").dtype == torch.float8_e4m3fn
        assert f.get_tensor("fp8_e5m2").dtype == torch.float8_e5m2
        for name in ("fp8_e4m3", "fp8_e5m2", "bf16"):
            t = f.get_tensor(name)
            raw = t.view(torch.uint8 if t.element_size() == 1 else torch.int16).numpy()
            assert raw.tobytes() == bits(arrays[name]), name


def test_tensors_are_laid_out_aligned_to_their_element_size(tmp_path):
    arrays = {"a_u8": np.arange(3, dtype=np.uint8), "b_f64": np.ones(2), "c_f16": np.ones(3, np.float16)}
    path = save_file(arrays, tmp_path / "x.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    for name, a in arrays.items():
        assert header[name]["data_offsets"][0] % a.dtype.itemsize == 0


def test_dtypes_safetensors_lacks_round_trip_through_coral_as_raw_bytes(tmp_path):
    arrays = {
        "c128": np.array([complex(np.nan, -0.0), 1 + 2j]),
        "i4": np.array([-8, 7, 0], dtype=ml_dtypes.int4),
        "f32": np.ones(2, np.float32),
    }
    path = save_file(arrays, tmp_path / "raw.safetensors")
    loaded = load_file(path)
    for name, a in arrays.items():
        assert same(loaded[name], a), name
    with safe_open(str(path), framework="numpy") as f:  # other readers see plain bytes
        assert f.get_tensor("c128").dtype == np.uint8
        assert RAW_DTYPES_KEY in f.metadata()


def test_failed_write_leaves_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": np.arange(4, dtype=np.float32)}, path)
    before = path.read_bytes()

    def read(name: str) -> np.ndarray:
        if name == "b":
            raise RuntimeError("disk on fire")
        return np.zeros(1000, np.float32)

    specs = [TensorSpec("a", "float32", (1000,)), TensorSpec("b", "float32", (1000,))]
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_file(path, specs, read)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_and_exported_files_get_a_normal_files_mode_under_the_umask(repo, tmp_path, umask):
    import stat

    repo.stage_weights({"w": np.ones(2, np.float32)})
    repo.commit("c")
    (tmp_path / "folder").mkdir()
    old = os.umask(umask)
    try:
        written = save_file({"x": np.ones(2)}, tmp_path / "x.safetensors")
        exported = Path(export_commit(repo, "HEAD", tmp_path / "folder"))  # -> folder/model.safetensors
    finally:
        os.umask(old)
    assert exported.name == "model.safetensors"
    for path in (written, exported):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path, oct(path.stat().st_mode))


def test_writer_refuses_an_array_that_differs_from_the_header(tmp_path):
    with pytest.raises(coral.CoralError, match="header promised"):
        write_file(
            tmp_path / "x.safetensors", [TensorSpec("a", "float32", (2,))], lambda n: np.zeros(3, np.float32)
        )
    assert not list(tmp_path.iterdir())


# ---- hostile headers ----------------------------------------------------------------------------------------


def craft(
    tmp_path: Path,
    header: object,
    data: bytes = b"",
    *,
    raw_header: bytes | None = None,
    length: int | None = None,
) -> Path:
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "header, data, match",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8, "outside"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
        ({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "hole"),
        ({"a": F32_2}, b"\0" * 12, "cover 8"),
        ({"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
        ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
        ({"a": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "outside"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, "data_offsets"),
        ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "exactly"),
        ({"a": {**F32_2, "extra": 1}}, b"\0" * 8, "exactly"),
        ({"__metadata__": {"k": 1}, "a": F32_2}, b"\0" * 8, "__metadata__"),
        ([1, 2], b"", "not a JSON object"),
        ({"": F32_2}, b"\0" * 8, "empty tensor name"),
        (
            {
                "__metadata__": {RAW_DTYPES_KEY: json.dumps({"a": {"dtype": "complex128", "shape": [2]}})},
                "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            },
            b"\0" * 8,
            "does not fill",
        ),
    ],
)
def test_hostile_headers_are_refused_with_a_specific_error(tmp_path, header, data, match):
    path = craft(tmp_path, header, data)
    with pytest.raises(MalformedFileError, match=match) as info:
        SafetensorsReader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "raw_header, length, data, match",
    [
        (
            b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}',
            None,
            b"\0" * 8,
            "duplicate",
        ),
        (b'{"a": NaN}', None, b"", "JSON"),
        (b"\xff\xfe{}", None, b"", "JSON"),
        (b"{}", 10**12, b"", "header length"),
        (b"{}", 2**63, b"", "header length"),
        (b'{"a": ', None, b"", "JSON"),
    ],
)
def test_malformed_header_bytes_are_refused(tmp_path, raw_header, length, data, match):
    path = craft(tmp_path, None, data, raw_header=raw_header, length=length)
    with pytest.raises(MalformedFileError, match=match):
        SafetensorsReader(path)


def test_tiny_and_truncated_files_are_refused(tmp_path):
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(MalformedFileError, match="8-byte"):
        SafetensorsReader(p)
    good = save_file({"a": np.arange(100, dtype=np.float32)}, tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(MalformedFileError):
        SafetensorsReader(cut)


def test_packed_fp4_is_reported_as_unsupported_not_misread(tmp_path):
    path = craft(tmp_path, {"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0\0")
    with pytest.raises(UnsupportedDtypeError, match="F4"):
        SafetensorsReader(path)


# ---- commits <-> files ---------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    with coral.Repository(tmp_path / "repo", init=True) as r:
        yield r


def test_export_then_import_reproduces_the_commit_bit_for_bit(repo, tmp_path):
    arrays = tricky_arrays()
    arrays["c128"] = np.array([complex(np.nan, -0.0)])
    repo.stage_weights(arrays)
    original = repo.commit("trained", {"loss": 0.25, "metrics": {"acc": float("nan")}})
    out = export_commit(repo, original, tmp_path / "exported.safetensors")
    seen = []
    new = import_file(
        repo, out, "re-imported", progress=lambda done, total: seen.append((done, total)), allow_empty=True
    )
    assert repo.diff(original, new)["identical"]  # same chunk ids: every byte deduplicated
    loaded = repo.load_arrays(new)
    for name, a in arrays.items():
        assert same(loaded[name], a), name
    meta = repo.get_commit(new).metadata
    assert meta["loss"] == 0.25 and np.isnan(meta["metrics"]["acc"])
    assert meta["import"] == {"source": "exported.safetensors", "format": "safetensors", "commit": original}
    assert seen[-1][0] == seen[-1][1] == sum(a.nbytes for a in arrays.values())


def test_export_names_subset_and_header_metadata(repo, tmp_path):
    repo.stage_weights({"w": np.ones(3, np.float32), "optim/m": np.zeros(3, np.float32)})
    cid = repo.commit("c", {"epoch": 2})
    out = export_commit(repo, "HEAD", tmp_path / "w.safetensors", names=["w"])
    folder = tmp_path / "folder"
    folder.mkdir()
    assert export_commit(repo, "HEAD", folder) == str(folder / "model.safetensors")
    with safe_open(out, framework="numpy") as f:
        assert list(f.keys()) == ["w"]
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["coral.commit"] == cid
    assert json.loads(meta["coral.metadata"]) == {"epoch": 2}


def test_importing_a_foreign_file_records_its_metadata(repo, tmp_path):
    path = tmp_path / "foreign.safetensors"
    st_numpy.save_file({"x": np.arange(3, dtype=np.int32)}, str(path), metadata={"origin": "elsewhere"})
    cid = import_file(repo, path)
    commit = repo.get_commit(cid)
    assert commit.message == "Import foreign.safetensors"
    assert commit.metadata == {
        "import": {
            "source": "foreign.safetensors",
            "format": "safetensors",
            "file_metadata": {"origin": "elsewhere"},
        }
    }


def test_import_streams_one_tensor_at_a_time(repo, tmp_path):
    """Memory during import stays near one tensor, not the whole file (8 x 4 MiB here)."""
    tensor_bytes = 4 * 1024 * 1024
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": rng.integers(0, 2**31, tensor_bytes // 4, dtype=np.int32) for i in range(8)}
    path = save_file(arrays, tmp_path / "big.safetensors")
    del arrays
    tracemalloc.start()
    try:
        import_file(repo, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * tensor_bytes, f"peak {peak} bytes for a {8 * tensor_bytes}-byte file"


def test_export_of_a_pruned_commit_is_refused(repo, tmp_path):
    repo.stage_weights({"w": np.ones(3)})
    cid = repo.commit("c")
    repo.prune(cid)
    with pytest.raises(PrunedCommitError):
        export_commit(repo, cid, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_import_refuses_when_tensors_are_already_staged(repo, tmp_path):
    path = save_file({"x": np.ones(2)}, tmp_path / "x.safetensors")
    repo.stage_weights({"y": np.ones(2)})
    with pytest.raises(coral.CoralError, match="already staged"):
        import_file(repo, path)


def test_import_refuses_path_escaping_tensor_names_before_writing(repo, tmp_path):
    path = save_file({"../evil": np.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(coral.CoralError, match=r"\.\."):
        import_file(repo, path)
    assert repo.head_commit() is None


# ---- plugin dispatch ---------------------------------------------------------------------------------------


class ToyArrays(dict):
    metadata: dict


class ToyFormat:
    """A real pluggy plugin: reads ``.toy`` JSON files and exports format ``toy``."""

    @hookimpl
    def coral_import_file(self, path):
        if not path.endswith(".toy"):
            return None
        arrays = ToyArrays(
            {k: np.array(v, dtype=np.float32) for k, v in json.loads(Path(path).read_text()).items()}
        )
        arrays.metadata = {"toy": {"version": 1}}  # what the import commit should record
        return arrays

    @hookimpl
    def coral_export(self, weights, metadata, out, format):
        if format != "toy":
            return None
        Path(out).write_text(
            json.dumps({"toy": metadata["toy"], **{k: weights[k].tolist() for k in weights}})
        )
        return out


@pytest.fixture
def toy_plugin():
    plugin = ToyFormat()
    plugins.register(plugin, name="toy-format")
    yield plugin
    plugins.unregister(plugin)


def test_other_formats_dispatch_to_plugins(repo, tmp_path, toy_plugin):
    src = tmp_path / "w.toy"
    src.write_text(json.dumps({"a": [1.0, 2.0]}))
    cid = import_file(repo, src)
    meta = repo.get_commit(cid).metadata
    assert meta["import"]["format"] == "toy" and meta["toy"] == {"version": 1}
    out = export_commit(repo, cid, tmp_path / "out.toy", "toy")
    assert json.loads(Path(out).read_text()) == {"toy": {"version": 1}, "a": [1.0, 2.0]}


class ModelOnlyFormat:
    """A real pluggy plugin whose format ``model-only`` writes no ``optim/`` tensors (like coral-hf's ``hf``)."""

    @hookimpl
    def coral_export(self, weights, metadata, out, format):
        if format != "model-only":
            return None
        kept = {k: weights[k].tolist() for k in weights if not k.startswith("optim/")}
        Path(out).write_text(json.dumps(kept))
        return out


def test_export_reports_what_a_plugin_wrote_and_what_it_left_out(repo, tmp_path, capsys):
    from coral.cli.main import main
    from coral.interchange import export_commit_report

    repo.stage_weights(
        {"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32), "optim/m": np.zeros(8, np.float32)}
    )
    cid = repo.commit("ckpt")
    plugin = ModelOnlyFormat()
    plugins.register(plugin, name="model-only-format")
    try:
        report = export_commit_report(repo, cid, tmp_path / "o.json", "model-only")
        assert report.names == ["a", "b"] and report.nbytes == 20 and report.left_out == ["optim/m"]
        assert report.path == str(tmp_path / "o.json")
        code = main(
            ["-C", str(repo.path), "export", "HEAD", str(tmp_path / "p.json"), "--format", "model-only"]
        )
        out = capsys.readouterr().out
    finally:
        plugins.unregister(plugin)
    assert code == 0 and "Exported 2 tensors (20 B)" in out, out
    assert "left out 1 tensors the model-only format does not hold (optim/)" in out, out
    full = export_commit_report(repo, cid, tmp_path / "w.safetensors")
    assert full.names == ["a", "b", "optim/m"] and full.left_out == [] and full.nbytes == 52


def test_formats_no_plugin_handles_name_the_package_to_install(repo, tmp_path):
    repo.stage_weights({"w": np.ones(2)})
    repo.commit("c")
    with pytest.raises(PluginError, match="no installed plugin exports format 'nosuch'"):
        export_commit(repo, "HEAD", tmp_path / "o", "nosuch")
    odd = tmp_path / "w.xyz"
    odd.write_bytes(b"?")
    with pytest.raises(PluginError, match="coral-torch"):
        import_file(repo, odd)
    with pytest.raises(coral.CoralError, match="no such file"):
        import_file(repo, tmp_path / "missing.safetensors")


def test_missing_torch_plugin_error_names_coral_torch(repo, tmp_path):
    """With only core's plugins loaded (CORAL_PLUGINS=""), a .pt file is an error naming coral-torch."""
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"PK")
    code = (
        "import coral, sys\n"
        "from coral.interchange import import_file\n"
        f"r = coral.Repository({str(repo.path)!r})\n"
        "try:\n"
        f"    import_file(r, {str(pt)!r})\n"
        "except coral.CoralError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "CORAL_PLUGINS": ""},
        timeout=120,
    )
    assert res.returncode == 3, res.stderr
    try:
        importlib.metadata.distribution("coral-torch")
    except importlib.metadata.PackageNotFoundError:
        assert "pip install coral-torch" in res.stdout
    else:  # installed, only switched off: installing it again would not help
        assert "need coral-torch, installed but its plugin is not loaded" in res.stdout, res.stdout
        assert "pip install coral-torch" not in res.stdout


def test_unrecognised_import_lists_the_supported_formats_without_reinstall_hints(repo, tmp_path, capsys):
    from coral.cli.main import main

    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(PluginError) as info:
        import_file(repo, empty)
    message = str(info.value)
    assert f"no installed plugin recognises the folder {empty}" in message
    assert ".safetensors files" in message
    for package in ("coral-torch", "coral-hf"):
        assert package in message  # what it reads is listed either way
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            assert f"pip install {package}" in message
        else:
            assert f"pip install {package}" not in message, message
    code = main(["-C", str(repo.path), "import", str(empty)])
    err = capsys.readouterr().err
    assert code == 1 and "no installed plugin recognises the folder" in err and "Traceback" not in err
    assert repo.head_commit() is None


# ---- PyTorch state dicts: weights_only, never unpickle --------------------------------------------------------


def test_pt_state_dict_imports_bit_exact_with_nested_names(repo, tmp_path):
    torch = pytest.importorskip("torch")
    from coral_torch.convert import tensor_to_numpy

    sd = {
        "fc.weight": torch.tensor([[-0.0, float("nan")], [1.0, -2.5]]).to(torch.bfloat16),
        "fc.bias": torch.tensor([0.5, -0.0], dtype=torch.float16),
        "fp8": torch.tensor([1.0, -448.0]).to(torch.float8_e4m3fn),
        "step": torch.tensor(7),
    }
    nested = {"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}}, "epoch": 3}
    torch.save(sd, tmp_path / "flat.pt")
    torch.save(nested, tmp_path / "nested.bin")
    for fname, prefix in (("flat.pt", ""), ("nested.bin", "model/")):
        cid = import_file(repo, tmp_path / fname)
        loaded = repo.load_arrays(cid)
        for name, t in sd.items():
            assert same(loaded[prefix + name], tensor_to_numpy(t)), (fname, name)
    assert set(repo.get_commit("HEAD").tree) == {"model/" + n for n in sd} | {"optimizer/state/0/exp_avg"}
    # the legacy (pre-zip) format cannot be memory-mapped and is read the plain way
    legacy = {"w": torch.tensor([-0.0, float("nan")]), "i": torch.arange(3)}
    torch.save(legacy, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    loaded = repo.load_arrays(import_file(repo, tmp_path / "legacy.pth"))
    assert all(same(loaded[n], tensor_to_numpy(t)) for n, t in legacy.items())


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_pt_is_refused_and_never_executes(repo, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import pickle

    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "payload": _Boom(str(marker))}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.bin", "wb") as fh:  # legacy (non-zip) pickle
        pickle.dump({"payload": _Boom(str(marker))}, fh)
    # the switch that turns weights_only off when a caller does not pass it must not matter
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for name in ("evil.pt", "evil.bin"):
        with pytest.raises(MalformedFileError, match="refused to load") as info:
            import_file(repo, tmp_path / name)
        assert "weights_only=True" in str(info.value)
    assert not marker.exists()
    assert repo.head_commit() is None and not repo.staged


def test_garbage_pt_file_is_a_clear_error(repo, tmp_path):
    pytest.importorskip("torch")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(MalformedFileError, match="bad.pt"):
        import_file(repo, bad)
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(MalformedFileError, match="not a readable PyTorch file"):
        import_file(repo, bad)


def test_save_file_without_fsync_writes_the_same_file(tmp_path: Path) -> None:
    """``fsync=False`` (throwaway files such as a resume folder) changes durability only, never the bytes."""
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, dtype=np.int64)}
    save_file(arrays, tmp_path / "durable.safetensors", {"format": "pt"})
    save_file(arrays, tmp_path / "quick.safetensors", {"format": "pt"}, fsync=False)
    assert (tmp_path / "durable.safetensors").read_bytes() == (tmp_path / "quick.safetensors").read_bytes()
    got = st_numpy.load_file(str(tmp_path / "quick.safetensors"))
    assert all(np.array_equal(got[k], v) for k, v in arrays.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
