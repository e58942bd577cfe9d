"""WeightTensor: a named array plus the metadata needed to store and restore it bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np

from ..errors import InvalidArgumentError
from .dtypes import DTYPES, dtype_from_name, dtype_name


@dataclass
class WeightMetadata:
    """What a tensor is: its name, shape and dtype, plus optional descriptive fields."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer_type: str | None = None
    model_name: str | None = None
    compression_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            self.dtype = dtype_name(self.dtype)  # np.float64, "<f8" and ">f8" all become "float64"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layer_type": self.layer_type,
            "model_name": self.model_name,
        }


class WeightTensor:
    """A named array. ``data`` is a little-endian C-contiguous numpy array of a Coral dtype.

    Big-endian and non-contiguous inputs are converted without changing any value. A tensor read from a
    repository may be lazy: its bytes are read on first access to ``data``.
    """

    __slots__ = ("_data", "_loader", "metadata")

    def __init__(
        self,
        data: np.ndarray | None = None,
        metadata: WeightMetadata | None = None,
        *,
        name: str | None = None,
        loader: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if data is None and loader is None:
            raise InvalidArgumentError("data", None, "a WeightTensor needs data (a numpy array)")
        if data is not None:
            data = _normalize(data)
            if metadata is None:
                metadata = WeightMetadata(name or "", data.shape, dtype_name(data.dtype))
            else:
                if tuple(metadata.shape) != data.shape:
                    raise InvalidArgumentError(
                        "metadata.shape", metadata.shape, f"data has shape {data.shape}"
                    )
                if metadata.dtype != dtype_name(data.dtype):
                    raise InvalidArgumentError(
                        "metadata.dtype", metadata.dtype, f"data has dtype {dtype_name(data.dtype)}"
                    )
        elif metadata is None:
            raise InvalidArgumentError("metadata", None, "a lazy WeightTensor needs its metadata")
        self._data = data
        self._loader = loader
        self.metadata = metadata

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            assert self._loader is not None
            self._data = self._loader()
            self._loader = None
        return self._data

    @property
    def is_loaded(self) -> bool:
        return self._data is not None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.metadata.shape

    @property
    def dtype(self) -> np.dtype:
        return dtype_from_name(self.metadata.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def compute_hash(self) -> str:
        """BLAKE3 of the canonical bytes: equal hashes mean bit-identical data of the same dtype and shape."""
        h = blake3.blake3(f"{self.metadata.dtype}:{self.shape}:".encode())
        # a uint8 view: ml_dtypes arrays (float8, int4, ...) do not export a castable buffer themselves
        h.update(self.data.reshape(-1).view(np.uint8).data if self.data.size else b"")
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightTensor):
            return NotImplemented
        return (
            self.metadata.dtype == other.metadata.dtype
            and self.shape == other.shape
            and raw_bytes(self.data) == raw_bytes(other.data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WeightTensor(name={self.name!r}, shape={self.shape}, dtype={self.metadata.dtype})"


def _normalize(data: Any) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        if hasattr(data, "__array__") or isinstance(data, (list, tuple, int, float, bool, complex)):
            data = np.asarray(data)
        else:
            raise InvalidArgumentError("data", type(data).__name__, "expected a numpy array")
    dtype_name(data.dtype)  # raises for unsupported dtypes
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    return data


def raw_bytes(array: np.ndarray) -> bytes:
    """The array's bytes, little-endian, C order (bit patterns, so NaN payloads and -0.0 compare exactly)."""
    return np.ascontiguousarray(array).tobytes()
