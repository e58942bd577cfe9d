"""Tracked PRNG keys: JAX has no global generator, so the keys a program registers are its RNG state.

``track_key(name, key)`` registers a key (typed ``jax.random.key`` or raw uint32 ``PRNGKey``); ``next_key(name)``
splits it and keeps the new state. Checkpoints capture every tracked key through the ``coral_get_rng_state``
hook (as ``{"jax": {name: {"data", "impl"}}}``) and restore them through ``coral_set_rng_state``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from coral.errors import InvalidArgumentError, RefNotFoundError

from .convert import host_arrays, is_jax_array, is_typed_key, key_impl_name, to_jax

_keys: dict[str, Any] = {}
_lock = threading.Lock()


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("name", name, "must be a non-empty string")
    return name


def _check_key(key: Any) -> Any:
    if is_typed_key(key) and is_jax_array(key):
        return key
    arr = np.asarray(key) if not is_jax_array(key) else key
    if arr.dtype != np.uint32 or arr.ndim < 1:
        raise InvalidArgumentError(
            "key",
            f"{type(key).__name__}{getattr(arr, 'shape', '')}",
            "expected jax.random.key(...) or a uint32 PRNGKey",
        )
    return key if is_jax_array(key) else jax.numpy.asarray(arr)


def track_key(name: str, key: Any) -> Any:
    """Register (or update) the key called ``name`` so checkpoints capture it; returns ``key``."""
    key = _check_key(key)
    with _lock:
        _keys[_check_name(name)] = key
    return key


def tracked_key(name: str) -> Any:
    """The current value of a tracked key (after a restore: the restored one)."""
    with _lock:
        try:
            return _keys[_check_name(name)]
        except KeyError:
            raise RefNotFoundError(f"no tracked JAX key {name!r} (tracked: {sorted(_keys)})") from None


def next_key(name: str) -> Any:
    """Split the tracked key ``name``: keep one half as its new state and return the other for use now."""
    with _lock:
        try:
            key = _keys[_check_name(name)]
        except KeyError:
            raise RefNotFoundError(f"no tracked JAX key {name!r}: call track_key first") from None
        new, sub = jax.random.split(key)
        _keys[name] = new
    return sub


def untrack_key(name: str) -> None:
    """Stop capturing the key ``name`` (no error when it was not tracked)."""
    with _lock:
        _keys.pop(name, None)


def tracked_keys() -> dict[str, Any]:
    """A copy of ``{name: key}`` for every tracked key."""
    with _lock:
        return dict(_keys)


def get_rng_state() -> dict[str, Any] | None:
    """``{"jax": {name: {"data": uint32 array, "impl": name or None}}}``, or None when nothing is tracked."""
    keys = tracked_keys()
    if not keys:
        return None
    names = sorted(keys)
    data = host_arrays([keys[n] for n in names], copy=True)
    return {
        "jax": {
            n: {"data": d, "impl": key_impl_name(keys[n]) if is_typed_key(keys[n]) else None}
            for n, d in zip(names, data, strict=True)
        }
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the tracked keys of a state from :func:`get_rng_state`; other generators are ignored."""
    jax_state = state.get("jax") if isinstance(state, Mapping) else None
    if not jax_state:
        return
    restored = {}
    for name, entry in jax_state.items():
        data = np.asarray(entry["data"], dtype=np.uint32)
        impl = entry.get("impl")
        restored[name] = to_jax(data, impl=impl) if impl else jax.numpy.asarray(data)
    with _lock:
        _keys.update(restored)


__all__ = ["next_key", "track_key", "tracked_key", "tracked_keys", "untrack_key"]
