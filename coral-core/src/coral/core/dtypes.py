"""The dtypes Coral stores, by canonical name, and their little-endian numpy forms.

bfloat16 and the float8 family come from ``ml_dtypes`` (the same package JAX uses), so core needs no
framework to hold them. ``ml_dtypes`` is imported on first need of one of its dtypes: its import costs about
half a second of CPU, which every fresh process (a resume, each CLI command) would pay for fp32 weights too.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping

import numpy as np

from ..errors import UnsupportedDtypeError

_NUMPY_NAMES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]
_ML_NAMES = [
    "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
    "float8_e3m4", "float8_e4m3", "float8_e8m0fnu", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn",
    "int4", "uint4", "int2", "uint2",
]

_ML_SET = frozenset(_ML_NAMES)


class DtypeTable(Mapping[str, np.dtype]):
    """Canonical name -> little-endian numpy dtype; the ``ml_dtypes`` entries are added on first need."""

    def __init__(self) -> None:
        self._table = {name: np.dtype(name).newbyteorder("<") for name in _NUMPY_NAMES}
        self._table["bool"] = np.dtype(bool)
        self._by_dtype = {dt: name for name, dt in self._table.items()}
        self._ml_loaded = False
        self._lock = threading.Lock()

    def load_ml(self) -> None:
        """Import ``ml_dtypes`` and add its dtypes (bfloat16, the float8 family, int4...)."""
        if self._ml_loaded:
            return
        with self._lock:
            if self._ml_loaded:
                return
            ml_dtypes = importlib.import_module("ml_dtypes")
            for name in _ML_NAMES:
                if hasattr(ml_dtypes, name):
                    dt = np.dtype(getattr(ml_dtypes, name))
                    self._table[name] = dt
                    self._by_dtype[dt] = name
            self._ml_loaded = True

    def name_of(self, dt: np.dtype) -> str | None:
        """The canonical name of ``dt`` (native or little-endian byte order), or None."""
        for attempt in (0, 1):
            name = self._by_dtype.get(dt)
            if name is None:
                name = self._by_dtype.get(dt.newbyteorder("="))
            if name is not None or attempt or self._ml_loaded or dt.kind != "V":
                return name
            self.load_ml()  # ml_dtypes' dtypes are numpy "V" (void-kind) dtypes
        return None

    def __getitem__(self, name: str) -> np.dtype:
        if name in _ML_SET:
            self.load_ml()
        return self._table[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name in _ML_SET:
            self.load_ml()
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        self.load_ml()
        return iter(dict(self._table))

    def __len__(self) -> int:
        self.load_ml()
        return len(self._table)


DTYPES = DtypeTable()


def dtype_name(dtype: np.dtype | type | str) -> str:
    """Canonical name of a numpy (or ml_dtypes) dtype; raises UnsupportedDtypeError for object, str, etc."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        if not (isinstance(dtype, str) and dtype in _ML_SET):
            raise
        DTYPES.load_ml()  # "bfloat16" names a numpy dtype once ml_dtypes is imported
        dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    name = DTYPES.name_of(dt)
    if name is None:
        raise UnsupportedDtypeError(f"dtype {dt!s} cannot be stored losslessly by Coral")
    return name


def dtype_from_name(name: str) -> np.dtype:
    """The little-endian numpy dtype for a canonical name; raises UnsupportedDtypeError for unknown names."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise UnsupportedDtypeError(f"unknown dtype name {name!r}") from None


def is_float(name: str) -> bool:
    """True for floating-point dtypes (where a delta should XOR bit patterns rather than subtract)."""
    return name.startswith(("float", "bfloat", "complex"))
