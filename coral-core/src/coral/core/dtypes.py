"""The dtypes Coral stores, by canonical name, and their little-endian numpy forms.

bfloat16 and the float8 family come from ``ml_dtypes`` (the same package JAX uses), so core needs no
framework to hold them.
"""

from __future__ import annotations

import ml_dtypes
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

DTYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in _NUMPY_NAMES}
for _name in _ML_NAMES:
    if hasattr(ml_dtypes, _name):
        DTYPES[_name] = np.dtype(getattr(ml_dtypes, _name))
DTYPES["bool"] = np.dtype(bool)
_BY_DTYPE = {dt: name for name, dt in DTYPES.items()}


def dtype_name(dtype: np.dtype | type | str) -> str:
    """Canonical name of a numpy (or ml_dtypes) dtype; raises UnsupportedDtypeError for object, str, etc."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    name = _BY_DTYPE.get(dt)
    if name is None:
        name = _BY_DTYPE.get(dt.newbyteorder("="))
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
