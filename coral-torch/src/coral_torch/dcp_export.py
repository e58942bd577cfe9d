"""Consolidate a sharded (DCP) commit into whole tensors for ``coral export``: numpy only, no torch import.

Each tensor of the commit's ``dcp`` layout is assembled from its shards (``name@offsets``) under its
unsharded name, one tensor in memory at a time; shards not selected (``--weights-only``) are left out.
When every exported name sits under ``model/`` (the usual ``dcp.save({"model": ..., "optim": ...})``),
that prefix is dropped, so the file loads straight into the unsharded model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from coral.core.dtypes import dtype_from_name
from coral.errors import CorruptObjectError
from coral.interchange.safetensors_io import TensorSpec, write_file


def whole_tensors(
    layout: Mapping[str, Any], available: Mapping[str, Any]
) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """``{unsharded name: (dtype, [tensor layout])}`` for every tensor whose shards are all in ``available``."""
    out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for md in (layout.get("tensors") or {}).values():
        if not md or not md.get("chunks"):
            continue
        names = [c["name"] for c in md["chunks"]]
        if all(n in available for n in names):
            out[names[0].split("@", 1)[0]] = (str(md["dtype"]), [md])
    return out


def assemble(md: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """One whole tensor from its shards (every element must be covered exactly by the layout)."""
    full = np.empty(tuple(int(s) for s in md["size"]), dtype=dtype_from_name(str(md["dtype"])))
    covered = 0
    for c in md["chunks"]:
        part = np.asarray(arrays[c["name"]])
        sizes = tuple(int(s) for s in c["sizes"])
        if part.shape != sizes:
            raise CorruptObjectError("commit", f"shard {c['name']!r} has shape {part.shape}, layout says {sizes}")
        full[tuple(slice(int(o), int(o) + s) for o, s in zip(c["offsets"], sizes, strict=True))] = part
        covered += part.size
    if covered != full.size:
        raise CorruptObjectError("commit", f"the shards of {md['chunks'][0]['name']!r} do not cover the tensor")
    return full


def export_safetensors(weights: Mapping[str, np.ndarray], metadata: Mapping[str, Any], out: str) -> str:
    """Write the consolidated tensors of a sharded commit to ``out`` (a folder gets ``model.safetensors``)."""
    layout = metadata["dcp"]
    target = Path(out) / "model.safetensors" if Path(out).is_dir() else Path(out)
    tensors = whole_tensors(layout, weights)
    if tensors and all(n.startswith("model/") for n in tensors):
        tensors = {n[len("model/"):]: v for n, v in tensors.items()}
    specs = [
        TensorSpec(name, dtype, tuple(int(s) for s in mds[0]["size"])) for name, (dtype, mds) in sorted(tensors.items())
    ]
    path = write_file(target, specs, lambda name: assemble(tensors[name][1][0], weights), {"format": "pt"})
    return os.fspath(path)
