"""Pure functions comparing trees and tensors: which names changed, and by how much."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.dtypes import is_float
from ..objects.tensors import TensorEntry

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: ``state/2`` before ``state/10``, ``layers.9`` before ``layers.10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(name) if part]


def has_similarity(dtype: str, shape: tuple[int, ...]) -> bool:
    """Cosine similarity and max |diff| mean something for float weights only: not for RNG or data-position
    ints, nor for float scalars such as Adam's ``step`` counter (one element: cosine is always 1)."""
    return is_float(dtype) and math.prod(shape) > 1


def tree_diff(a: Mapping[str, TensorEntry], b: Mapping[str, TensorEntry]) -> dict[str, Any]:
    """Changed / added / removed names (natural order); unchanged when dtype, shape and content ids all match."""
    changed = sorted((n for n in a.keys() & b.keys() if a[n].identity != b[n].identity), key=natural_key)
    added = sorted(b.keys() - a.keys(), key=natural_key)
    removed = sorted(a.keys() - b.keys(), key=natural_key)
    return {"identical": not (changed or added or removed), "changed": changed, "added": added, "removed": removed}


def tensor_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Cosine similarity, max absolute difference and relative L2 change (||b-a|| / ||a||), in float64."""
    x = a.astype(np.float64, copy=False).ravel() if a.dtype.kind != "c" else np.abs(a).astype(np.float64).ravel()
    y = b.astype(np.float64, copy=False).ravel() if b.dtype.kind != "c" else np.abs(b).astype(np.float64).ravel()
    d = y - x
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    cos = float(np.dot(x, y) / (nx * ny)) if nx and ny else (1.0 if nx == ny else 0.0)
    return {
        "cosine_similarity": cos,
        "max_abs_diff": float(np.max(np.abs(d))) if d.size else 0.0,
        "relative_l2": float(np.linalg.norm(d) / nx) if nx else float(np.linalg.norm(d)),
    }
