"""A streaming, validating reader and writer for the safetensors format (no third-party code on the path).

Layout: an 8-byte little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the raw little-endian tensor bytes.
Tensors are read and written one at a time, so memory stays near the largest tensor; headers from
untrusted files are checked (offsets in range, no overlap or hole, sizes match) before any data is read.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..core.dtypes import dtype_from_name, dtype_name
from ..errors import InvalidArgumentError, MalformedFileError, UnsupportedDtypeError
from ..store.atomicfile import atomic_open

log = logging.getLogger(__name__)

#: Coral dtype name -> safetensors dtype code (the codes the reference implementation writes).
CODES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
}
#: safetensors dtype code -> Coral dtype name.
NAMES: dict[str, str] = {code: name for name, code in CODES.items()}

#: ``__metadata__`` key under which Coral records tensors it had to store as raw ``U8`` bytes because
#: safetensors has no code for their dtype (complex128, int4, float6, ...): ``{name: {"dtype", "shape"}}``.
RAW_DTYPES_KEY = "coral.raw_dtypes"

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
MAX_DIMS = 64
MAX_DIM = 1 << 48  # larger dimensions are absurd even alongside a zero-sized one
_COPY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: Coral dtype name, shape, and byte range within the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _bad(path: object, reason: str) -> MalformedFileError:
    return MalformedFileError(f"{path}: not a valid safetensors file: {reason}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-standard JSON constant {value}")


def parse_header(
    raw: bytes, data_len: int, path: object = "<bytes>"
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a header against a data section of ``data_len`` bytes; returns (tensors, metadata).

    Raises MalformedFileError for anything the reference implementation would refuse, and
    UnsupportedDtypeError for a well-formed dtype code Coral cannot hold (packed F4/F6).
    """
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _bad(path, "header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _bad(path, "__metadata__ must map strings to strings")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        if not name:
            raise _bad(path, "empty tensor name")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str):
            raise _bad(path, f"tensor {name!r}: dtype {code!r} is not a string")
        if code not in NAMES:
            if code in ("F4", "F6_E2M3", "F6_E3M2"):
                raise UnsupportedDtypeError(
                    f"{path}: tensor {name!r} has packed dtype {code}, which Coral cannot import"
                )
            raise _bad(path, f"tensor {name!r}: unknown dtype {code!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_count(s) for s in shape):
            raise _bad(
                path,
                f"tensor {name!r}: shape {shape!r} must be a list of at most {MAX_DIMS} non-negative ints",
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise _bad(path, f"tensor {name!r}: data_offsets {offsets!r} must be two non-negative ints")
        begin, end = offsets
        if not begin <= end <= data_len:
            raise _bad(
                path, f"tensor {name!r}: data_offsets {offsets} outside the {data_len}-byte data section"
            )
        dname = NAMES[code]
        expected = math.prod(shape) * dtype_from_name(dname).itemsize
        if expected != end - begin:
            raise _bad(
                path,
                f"tensor {name!r}: shape {shape} of {code} needs {expected} bytes, offsets give {end - begin}",
            )
        tensors[name] = TensorInfo(name, dname, tuple(shape), begin, end)
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            what = (
                "overlaps the previous tensor" if info.begin < cursor else f"leaves a hole at byte {cursor}"
            )
            raise _bad(path, f"tensor {info.name!r} (offsets {info.begin}..{info.end}) {what}")
        cursor = info.end
    if cursor != data_len:
        raise _bad(path, f"data section has {data_len} bytes but tensors cover {cursor}")
    return _apply_raw_dtypes(tensors, meta, path), meta


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_DIM


def _apply_raw_dtypes(
    tensors: dict[str, TensorInfo], meta: Mapping[str, str], path: object
) -> dict[str, TensorInfo]:
    """Give back the real dtype of tensors Coral wrote as raw U8 bytes (see :data:`RAW_DTYPES_KEY`)."""
    raw = meta.get(RAW_DTYPES_KEY)
    if raw is None:
        return tensors
    try:
        table = json.loads(raw)
        if not isinstance(table, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise _bad(path, f"{RAW_DTYPES_KEY} is not a JSON object ({exc})") from None
    out = dict(tensors)
    for name, spec in table.items():
        info = tensors.get(name)
        try:
            dname, shape = str(spec["dtype"]), tuple(spec["shape"])
            dt = dtype_from_name(dname)
        except (KeyError, TypeError, UnsupportedDtypeError) as exc:
            raise _bad(path, f"{RAW_DTYPES_KEY}[{name!r}] is invalid ({exc})") from None
        if (
            info is None
            or info.dtype != "uint8"
            or len(shape) > MAX_DIMS
            or not all(_is_count(s) for s in shape)
        ):
            raise _bad(path, f"{RAW_DTYPES_KEY}[{name!r}] does not match a raw uint8 tensor")
        if math.prod(shape) * dt.itemsize != info.nbytes:
            raise _bad(
                path, f"{RAW_DTYPES_KEY}[{name!r}]: {dname}{list(shape)} does not fill {info.nbytes} bytes"
            )
        out[name] = TensorInfo(name, dname, shape, info.begin, info.end)
    return out


class SafetensorsReader:
    """Open a safetensors file, validate its header, and read tensors one at a time (bit-exact copies).

    Use as a context manager; ``tensors`` and ``metadata`` are available right after opening.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh: io.BufferedReader = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if size < 8:
                raise _bad(self.path, f"only {size} bytes (needs at least an 8-byte header length)")
            (n,) = struct.unpack("<Q", self._fh.read(8))
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise _bad(
                    self.path,
                    f"header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER_BYTES}-byte limit",
                )
            raw = self._fh.read(n)
            if len(raw) != n:
                raise _bad(self.path, "truncated header")
            self._data_start = 8 + n
            self.tensors, self.metadata = parse_header(raw, size - self._data_start, self.path)
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.tensors)

    def names(self) -> list[str]:
        """Tensor names in file order."""
        return [t.name for t in sorted(self.tensors.values(), key=lambda t: t.begin)]

    def read(self, name: str) -> np.ndarray:
        """A fresh, writable array with the tensor's exact bytes."""
        info = self.tensors.get(name)
        if info is None:
            raise InvalidArgumentError("name", name, f"no such tensor in {self.path}")
        out = np.empty(info.shape, dtype=dtype_from_name(info.dtype))
        view = out.reshape(-1).view(np.uint8).data
        self._fh.seek(self._data_start + info.begin)
        done = 0
        while done < info.nbytes:
            got = self._fh.readinto(view[done:])
            if not got:
                raise _bad(self.path, f"file ended inside tensor {name!r}")
            done += got
        return out

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, array)`` in file order, one tensor in memory at a time."""
        for name in self.names():
            yield name, self.read(name)


def load_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file (bit-exact) into a dict."""
    with SafetensorsReader(path) as reader:
        return dict(reader)


@dataclass(frozen=True)
class TensorSpec:
    """What the writer needs to know about a tensor before its bytes: Coral dtype name and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * dtype_from_name(self.dtype).itemsize


def build_header(
    specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, list[TensorSpec]]:
    """The padded header bytes and the order tensors must be written in.

    Tensors are laid out by decreasing element size, then name, so with an 8-byte aligned header every
    tensor starts aligned to its element size (what mmap readers want). Dtypes safetensors lacks are
    written as raw ``U8`` bytes and recorded in ``__metadata__[RAW_DTYPES_KEY]`` so Coral reads them back.
    """
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise InvalidArgumentError("metadata", meta, "safetensors metadata must map strings to strings")
    specs = list(specs)
    seen: set[str] = set()
    for s in specs:
        if not isinstance(s.name, str) or not s.name or s.name == "__metadata__" or s.name in seen:
            raise InvalidArgumentError(
                "tensor name", s.name, "must be a unique, non-empty string other than __metadata__"
            )
        seen.add(s.name)
    order = sorted(specs, key=lambda s: (-dtype_from_name(s.dtype).itemsize, s.name))
    header: dict[str, Any] = {}
    raw_dtypes: dict[str, Any] = {}
    offset = 0
    for s in order:
        code = CODES.get(s.dtype)
        shape = list(s.shape)
        if code is None:
            raw_dtypes[s.name] = {"dtype": s.dtype, "shape": shape}
            code, shape = "U8", [s.nbytes]
        header[s.name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    if raw_dtypes:
        log.warning(
            "safetensors has no dtype for %s; written as raw U8 bytes that Coral restores exactly on import",
            ", ".join(f"{n} ({d['dtype']})" for n, d in sorted(raw_dtypes.items())),
        )
        meta[RAW_DTYPES_KEY] = json.dumps(raw_dtypes, sort_keys=True, separators=(",", ":"))
    if meta:
        header = {"__metadata__": meta, **header}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, order


def write_file(
    path: str | os.PathLike[str],
    specs: Iterable[TensorSpec],
    read: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    fsync: bool = True,
) -> Path:
    """Write a safetensors file atomically, asking ``read(name)`` for one tensor at a time.

    The file appears complete or not at all (temp file, fsync, rename). ``progress(nbytes)`` is called after
    each tensor. ``fsync=False`` skips the flush (a throwaway file, e.g. a resume folder in a temp dir).
    Returns the written path.
    """
    target = Path(path)
    header, order = build_header(specs, metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, fsync=fsync) as fh:  # a normal file's mode under the umask, like any new file
        fh.write(header)
        for spec in order:
            array = read(spec.name)
            _write_array(fh, spec, array)
            del array
            if progress is not None:
                progress(spec.nbytes)
    return target


def _write_array(fh: BinaryIO, spec: TensorSpec, array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"tensor {spec.name!r}", type(array).__name__, "expected a numpy array")
    if dtype_name(array.dtype) != spec.dtype or tuple(array.shape) != tuple(spec.shape):
        raise InvalidArgumentError(
            f"tensor {spec.name!r}",
            f"{dtype_name(array.dtype)}{list(array.shape)}",
            f"header promised {spec.dtype}{list(spec.shape)}",
        )
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.nbytes, _COPY_BYTES):
        fh.write(flat[start : start + _COPY_BYTES].data)


def save_file(
    arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None,
    *, fsync: bool = True,
) -> Path:
    """Write ``{name: ndarray}`` to a safetensors file (same argument order as ``safetensors.numpy.save_file``);
    durable unless ``fsync=False``."""
    specs = [TensorSpec(n, dtype_name(a.dtype), tuple(a.shape)) for n, a in arrays.items()]
    return write_file(path, specs, lambda n: arrays[n], metadata, fsync=fsync)
