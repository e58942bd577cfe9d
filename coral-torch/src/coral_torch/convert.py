"""Exact torch <-> numpy conversion: the bits never change (bf16 and float8 go through ml_dtypes views)."""

from __future__ import annotations

import numpy as np
import torch
from coral.core.dtypes import dtype_from_name

_TORCH_TO_NAME: dict[torch.dtype, str] = {
    torch.bool: "bool", torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16", torch.int32: "int32",
    torch.int64: "int64", torch.float16: "float16", torch.float32: "float32", torch.float64: "float64",
    torch.bfloat16: "bfloat16", torch.complex64: "complex64", torch.complex128: "complex128",
}
for _tname, _cname in [
    ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
    ("float8_e4m3fn", "float8_e4m3fn"), ("float8_e5m2", "float8_e5m2"),
    ("float8_e4m3fnuz", "float8_e4m3fnuz"), ("float8_e5m2fnuz", "float8_e5m2fnuz"),
    ("float8_e8m0fnu", "float8_e8m0fnu"),
]:
    if hasattr(torch, _tname):
        _TORCH_TO_NAME[getattr(torch, _tname)] = _cname
_NAME_TO_TORCH = {v: k for k, v in _TORCH_TO_NAME.items()}
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def torch_dtype_name(dtype: torch.dtype) -> str:
    try:
        return _TORCH_TO_NAME[dtype]
    except KeyError:
        from coral.errors import UnsupportedDtypeError

        raise UnsupportedDtypeError(f"torch dtype {dtype} is not supported by Coral") from None


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a Coral dtype name (``"bfloat16"`` -> ``torch.bfloat16``)."""
    try:
        return _NAME_TO_TORCH[name]
    except KeyError:
        from coral.errors import UnsupportedDtypeError

        raise UnsupportedDtypeError(f"dtype {name} has no torch equivalent") from None


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy array with the tensor's exact bits, on CPU, C-contiguous (a copy only when needed)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    t = t.contiguous()
    name = torch_dtype_name(t.dtype)
    target = dtype_from_name(name)
    if name in (
        "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64", "complex128"
    ):
        return t.numpy()
    itemsize = target.itemsize
    if itemsize in _SAME_SIZE_INT and t.dtype.itemsize == itemsize:
        return t.view(_SAME_SIZE_INT[itemsize]).numpy().view(target)
    raise TypeError(f"cannot convert {t.dtype}")


def numpy_to_tensor(a: np.ndarray, name: str | None = None) -> torch.Tensor:
    """A torch tensor with the array's exact bits (writable copy when the array is read-only)."""
    from coral.core.dtypes import dtype_name

    name = name or dtype_name(a.dtype)
    if not a.flags.c_contiguous or not a.flags.writeable:
        a = np.array(a, order="C", copy=True)  # not ascontiguousarray: it turns 0-d arrays into 1-d
    tdt = _NAME_TO_TORCH.get(name)
    if tdt is None:
        from coral.errors import UnsupportedDtypeError

        raise UnsupportedDtypeError(f"dtype {name} has no torch equivalent")
    if name in (
        "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64", "complex128"
    ):
        return torch.from_numpy(a)
    itemsize = a.dtype.itemsize
    raw = a.view({1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}[itemsize])
    return torch.from_numpy(raw).view(tdt)


__all__ = ["numpy_to_tensor", "tensor_to_numpy", "torch_dtype", "torch_dtype_name"]
