"""Exact deltas between two chunks of equal length: XOR of bit patterns, or zig-zag integer difference.

XOR suits floats (nearby values share sign, exponent and high mantissa bits, so those planes become
zeros); the wrapping integer difference suits integer tensors and counters. Both invert exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_UINT: dict[int, type[np.unsignedinteger[Any]]] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _lanes(itemsize: int) -> tuple[type[np.unsignedinteger[Any]], int]:
    """Unsigned lane type used for an element size (16-byte complex128 uses two 8-byte lanes)."""
    if itemsize in _UINT:
        return _UINT[itemsize], itemsize
    return np.uint64, 8


def xor_residual(data: memoryview | bytes, base: memoryview | bytes, itemsize: int) -> np.ndarray:
    t, _ = _lanes(itemsize)
    return np.bitwise_xor(np.frombuffer(data, dtype=t), np.frombuffer(base, dtype=t))


def xor_apply(residual: np.ndarray, base: memoryview | bytes | np.ndarray, itemsize: int, out: np.ndarray) -> None:
    t, _ = _lanes(itemsize)
    np.bitwise_xor(residual.view(t), np.frombuffer(base, dtype=t), out=out.view(t))


def sub_residual(data: memoryview | bytes, base: memoryview | bytes, itemsize: int) -> np.ndarray:
    """zig-zag(data - base) with wrap-around, as unsigned integers of the element size."""
    t, size = _lanes(itemsize)
    bits = size * 8
    a = np.frombuffer(data, dtype=t)
    b = np.frombuffer(base, dtype=t)
    d = (a - b).view(np.dtype(f"i{size}"))
    zz = (d << 1) ^ (d >> (bits - 1))
    return zz.view(t)


def sub_apply(residual: np.ndarray, base: memoryview | bytes | np.ndarray, itemsize: int, out: np.ndarray) -> None:
    """out = base + unzigzag(residual). ``residual`` is scratch (overwritten); no temporary arrays: a restore
    applies one per link of a delta chain, and fresh 4 MiB temporaries made it about twice as slow."""
    t, _ = _lanes(itemsize)
    zz = residual.view(t)
    b = np.frombuffer(base, dtype=t)
    o = out.view(t)
    if np.may_share_memory(o, b) or np.may_share_memory(o, zz):  # cannot use out as scratch (bounds check)
        sign = zz & 1
        np.negative(sign, out=sign)  # unsigned: 1 -> all ones, 0 -> 0
        d = zz >> 1
        d ^= sign
        np.add(b, d, out=o)
        return
    np.bitwise_and(zz, 1, out=o)
    np.negative(o, out=o)  # unsigned: 1 -> all ones, 0 -> 0
    np.right_shift(zz, 1, out=zz)
    np.bitwise_xor(zz, o, out=zz)
    np.add(b, zz, out=o)
