"""Coral's own plugin: the ``file`` and ``memory`` backends and the python/numpy RNG states.

Supplied through the same hooks a third party uses, so the built-ins prove the seam.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np

from ..hookspecs import hookimpl
from .local import LocalStore
from .memory import MemoryStore


@hookimpl
def coral_storage_backends(register: Callable[[str, type], None]) -> None:
    register("file", LocalStore)
    register("memory", MemoryStore)


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
