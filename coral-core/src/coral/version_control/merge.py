"""Weight-space merges: average, weighted, and task arithmetic. Pure functions over name -> tensor maps."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import InvalidArgumentError, MergeConflictError

STRATEGIES = ("average", "weighted", "task_arithmetic")


def merge_weights(
    ours: Mapping[str, WeightTensor],
    theirs: Mapping[str, WeightTensor],
    strategy: str,
    weights: Sequence[float] | None,
    base: Mapping[str, WeightTensor] | None = None,
    on_conflict: str | None = None,
) -> dict[str, WeightTensor]:
    """Combine two weight sets. Float tensors are combined in float64 and cast back to their dtype;
    other dtypes must be equal (else they are conflicts)."""
    if strategy not in STRATEGIES:
        raise InvalidArgumentError("strategy", strategy, f"choose one of {', '.join(STRATEGIES)}")
    if on_conflict not in (None, "ours", "theirs"):
        raise InvalidArgumentError("on_conflict", on_conflict, "choose 'ours' or 'theirs'")
    if strategy == "average":
        w = (0.5, 0.5)
    elif strategy == "weighted":
        if weights is None or len(weights) != 2:
            raise InvalidArgumentError("weights", weights, "weighted merge needs [w_ours, w_theirs]")
        w = (float(weights[0]), float(weights[1]))
    else:
        w = (1.0, 1.0) if weights is None else (float(weights[0]), float(weights[1]))
        if base is None:
            raise InvalidArgumentError("base", None, "task_arithmetic needs the merge base")

    conflicts: dict[str, str] = {}
    out: dict[str, WeightTensor] = {}
    for name in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(name), theirs.get(name)
        if a is None or b is None:
            conflicts[name] = "missing in ours" if a is None else "missing in theirs"
            continue
        if a.shape != b.shape or a.metadata.dtype != b.metadata.dtype:
            conflicts[name] = f"shape/dtype {a.shape}/{a.metadata.dtype} vs {b.shape}/{b.metadata.dtype}"
            continue
        da, db = a.data, b.data
        if da.dtype.kind not in "fcV" or a.metadata.dtype == "bool":
            if not np.array_equal(da, db):
                conflicts[name] = "non-float tensors differ"
                continue
            out[name] = WeightTensor(da, WeightMetadata(name, a.shape, a.metadata.dtype, a.metadata.layer_type))
            continue
        xa, xb = da.astype(np.float64 if da.dtype.kind != "c" else np.complex128), db.astype(
            np.float64 if db.dtype.kind != "c" else np.complex128
        )
        if strategy == "task_arithmetic":
            c = base.get(name) if base else None  # type: ignore[union-attr]
            if c is None or c.shape != a.shape:
                conflicts[name] = "missing or reshaped in the merge base"
                continue
            xc = c.data.astype(xa.dtype)
            merged = xc + w[0] * (xa - xc) + w[1] * (xb - xc)
        else:
            merged = w[0] * xa + w[1] * xb
        out[name] = WeightTensor(
            merged.astype(da.dtype), WeightMetadata(name, a.shape, a.metadata.dtype, a.metadata.layer_type)
        )
    if conflicts:
        if on_conflict is None:
            raise MergeConflictError(conflicts)
        side = ours if on_conflict == "ours" else theirs
        for name in conflicts:
            if name in side:
                out[name] = side[name]
    return out
