"""Pure functions comparing trees and tensors: which names changed, and by how much."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..objects.tensors import TensorEntry


def tree_diff(a: Mapping[str, TensorEntry], b: Mapping[str, TensorEntry]) -> dict[str, Any]:
    """Changed / added / removed names; a tensor is unchanged when dtype, shape and content ids all match."""
    changed = sorted(n for n in a.keys() & b.keys() if a[n].identity != b[n].identity)
    added = sorted(b.keys() - a.keys())
    removed = sorted(a.keys() - b.keys())
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
