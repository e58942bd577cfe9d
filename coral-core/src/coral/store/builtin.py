"""Coral's own plugin: the ``file``, ``memory``, ``s3`` and fsspec backends and the python/numpy RNG states.

Supplied through the same hooks a third party uses, so the built-ins prove the seam.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from ..hookspecs import hookimpl
from .fsspec_store import FsspecStore
from .local import LocalStore
from .memory import MemoryStore
from .s3 import S3Store

# object stores fsspec serves under their own scheme (through gcsfs, adlfs, ...); any other installed fsspec
# protocol is reachable as ``fsspec+PROTOCOL://`` (``fsspec+file:///path`` for a local folder)
_BARE_FSSPEC = ("gs", "gcs", "az", "abfs", "abfss", "oss")


def _fsspec_protocols() -> list[str]:
    """The protocols fsspec knows (without importing fsspec's implementations); a short list without fsspec."""
    if importlib.util.find_spec("fsspec") is None:
        return ["file", "memory", *_BARE_FSSPEC]
    from fsspec.registry import known_implementations, registry

    return sorted(set(known_implementations) | set(registry))


@hookimpl
def coral_storage_backends(register: Callable[[str, type], None]) -> None:
    register("file", LocalStore)
    register("memory", MemoryStore)
    register("s3", S3Store)
    register("s3a", S3Store)
    for proto in _BARE_FSSPEC:
        register(proto, FsspecStore)
    for proto in _fsspec_protocols():
        register(f"fsspec+{proto}", FsspecStore)


@hookimpl
def coral_get_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": {"version": version, "state": np.asarray(internal, dtype=np.uint64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": np.asarray(keys), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
    }


@hookimpl
def coral_set_rng_state(state: dict[str, Any]) -> None:
    py = state.get("python")
    if py is not None:
        random.setstate((int(py["version"]), tuple(int(x) for x in np.asarray(py["state"])), py["gauss"]))
    npy = state.get("numpy")
    if isinstance(npy, (tuple, list)):  # np.random.get_state() as the user guide stores it (section 6.4)
        kind, keys, pos, has_gauss, cached = npy[:5]
        npy = {"kind": kind, "keys": keys, "pos": pos, "has_gauss": has_gauss, "cached": cached}
    elif isinstance(npy, dict) and "bit_generator" in npy:  # np.random.get_state(legacy=False)
        np.random.set_state(npy)
        npy = None
    if npy is not None:
        np.random.set_state(
            (
                str(npy["kind"]), np.asarray(npy["keys"], dtype=np.uint32), int(npy["pos"]),
                int(npy["has_gauss"]), float(npy["cached"]),
            )
        )
