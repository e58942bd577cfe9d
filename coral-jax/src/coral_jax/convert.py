"""Exact jax.Array <-> numpy conversion: the bits never change (bf16 and float8 are ml_dtypes on both sides)."""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from coral.core.dtypes import dtype_name
from coral.errors import InvalidArgumentError

log = logging.getLogger(__name__)


def is_jax_array(value: Any) -> bool:
    """True for a concrete ``jax.Array`` (typed PRNG key arrays included); tracers are not concrete."""
    return isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)


def is_typed_key(value: Any) -> bool:
    """True for a new-style typed PRNG key array (``jax.random.key``), or a ShapeDtypeStruct of one."""
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def key_impl_name(key: Any) -> str:
    """The PRNG implementation name of a typed key (``"threefry2x32"``, ``"rbg"``, ...)."""
    return str(jax.random.key_impl(key))


def _check_concrete(value: Any, where: str) -> None:
    if isinstance(value, jax.core.Tracer):
        raise InvalidArgumentError(
            where, type(value).__name__, "is a tracer: save concrete arrays, outside jit/grad"
        )


def host_arrays(values: list[Any], copy: bool = False) -> list[np.ndarray]:
    """Fetch jax arrays to host numpy arrays in one batched transfer; typed keys come back as their key data.

    Without ``copy`` a CPU array comes back as a read-only view of its buffer (no bytes copied): it stays
    valid and unchanged after the jax array is gone or donated (docs/jax_snapshots.md). ``copy=True``
    returns arrays that own their memory.
    """
    for v in values:
        _check_concrete(v, "array")
    raw = [jax.random.key_data(v) if is_typed_key(v) else v for v in values]
    fetched = jax.device_get(raw)
    out = []
    for v in fetched:
        a = np.asarray(v)
        dtype_name(a.dtype)  # raises UnsupportedDtypeError for float0 and friends, naming the dtype
        out.append(np.array(a, copy=True) if copy or not a.flags.c_contiguous else a)
    return out


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array with the exact bits of a jax array (a typed key gives its uint32 key data)."""
    return host_arrays([value])[0]


def make_weak(x: jax.Array) -> jax.Array:
    """Mark an array weakly typed, as arrays made from Python scalars are (it changes type promotion)."""
    try:
        from jax._src.lax.lax import _convert_element_type

        return _convert_element_type(x, weak_type=True)
    except Exception as exc:  # noqa: BLE001 - private API moved: keep the value, lose only the weak flag
        log.debug("cannot restore weak_type: %s", exc)
        return x


def to_jax(array: np.ndarray, *, like: Any = None, weak: bool = False, impl: str | None = None) -> jax.Array:
    """A jax array with the exact bits of ``array``; ``like`` (an array or ShapeDtypeStruct) gives sharding.

    ``impl`` wraps uint32 key data back into a typed PRNG key of that implementation.
    """
    sharding = getattr(like, "sharding", None) if like is not None else None
    if impl is not None:
        out = jax.random.wrap_key_data(np.asarray(array), impl=impl)
        return jax.device_put(out, sharding) if sharding is not None else out
    out = jax.device_put(np.asarray(array), sharding) if sharding is not None else jnp.asarray(array)
    if out.dtype != array.dtype:
        # jnp.asarray canonicalises 64-bit types when jax_enable_x64 is off: refuse to change bits silently
        raise InvalidArgumentError(
            "array",
            str(array.dtype),
            f"JAX would store it as {out.dtype}; enable jax_enable_x64 or restore as numpy",
        )
    return make_weak(out) if weak else out


__all__ = ["host_arrays", "is_jax_array", "is_typed_key", "key_impl_name", "make_weak", "to_jax", "to_numpy"]
