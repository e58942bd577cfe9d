"""Pytrees to named host arrays and back: stable key-path names, a JSON structure, exact dtypes.

A leaf's name is its key path joined by ``/`` (``params/Dense_0/kernel``; namedtuple fields by name, sequences
by index; an ``nnx.Variable``'s ``.value`` step is left out). The structure is plain JSON (kept in commit
metadata) and rebuilds dicts, lists and tuples without a template; with a template (``like``) the result has
the template's exact classes, dtypes and shardings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from coral.core.weight_tensor import WeightMetadata, WeightTensor
from coral.errors import InvalidArgumentError, RefNotFoundError, ShapeMismatchError
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

from .convert import host_arrays, is_jax_array, is_typed_key, key_impl_name, to_jax

log = logging.getLogger(__name__)

ROOT_NAME = "value"
"""The name of the single array when the whole pytree is one leaf."""

STRUCTURE_FORMAT = 1


# ---- names -------------------------------------------------------------------------------------------------
def escape_segment(segment: str) -> str:
    """Make a key usable as one path segment, injectively (``/`` and ``%`` are percent-escaped)."""
    s = segment.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")
    if s in ("", ".", ".."):
        return {"": "%E", ".": "%2E", "..": "%2E%2E"}[s]
    return s


def _entry(entry: Any, where: str) -> tuple[str, Any]:
    """(path segment, JSON key) of one jax key-path entry."""
    if isinstance(entry, DictKey):
        k = entry.key
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            raise InvalidArgumentError(
                where or ROOT_NAME, repr(k), "dict keys must be strings or integers to be stored"
            )
        return escape_segment(str(k)), k
    if isinstance(entry, SequenceKey):
        return str(entry.idx), entry.idx
    if isinstance(entry, GetAttrKey):
        return escape_segment(entry.name), entry.name
    if isinstance(entry, FlattenedIndexKey):
        return str(entry.key), entry.key
    raise InvalidArgumentError(where or ROOT_NAME, repr(entry), "unknown pytree key type")


def _join(segs: list[str]) -> str:
    return "/".join(segs) if segs else ROOT_NAME


def key_path_name(path: tuple[Any, ...]) -> str:
    """The name of a leaf from its jax key path (as ``tree_flatten_with_path`` gives it); an
    ``nnx.Variable``'s ``.value`` is only left out by :func:`flatten_pytree`, which sees the node types."""
    return _join([_entry(e, "")[0] for e in path])


# ---- node classification -----------------------------------------------------------------------------------
def _is_iterator(node: Any) -> bool:
    from coral.training import CheckpointableIterator

    return not isinstance(node, type) and isinstance(node, CheckpointableIterator)


def _nnx_variable_type() -> type | None:
    nnx = sys.modules.get("flax.nnx")
    return getattr(nnx, "Variable", None) if nnx is not None else None


def _one_level(node: Any) -> tuple[list[tuple[Any, Any]], Any] | None:
    """The direct children of a pytree container with their key entries, and the one-level treedef;
    None when ``node`` is a leaf."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(pairs) == 1 and pairs[0][0] == ():
        return None
    return [(path[0], child) for path, child in pairs], treedef


def _variable_child(node: Any, kids: list[tuple[Any, Any]]) -> bool:
    var = _nnx_variable_type()
    return (
        var is not None
        and isinstance(node, var)
        and len(kids) == 1
        and isinstance(kids[0][0], GetAttrKey)
        and kids[0][0].name == "value"
    )


def _kind(node: Any) -> str:
    t = type(node)
    if t is dict:
        return "dict"
    if t is list:
        return "list"
    if t is tuple:
        return "tuple"
    if isinstance(node, tuple) and hasattr(t, "_fields"):
        return "namedtuple"
    return "node"


# ---- flatten -----------------------------------------------------------------------------------------------
class _Collector:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, name: str, value: Any) -> None:
        if name in self.values:
            raise InvalidArgumentError("pytree", name, "two leaves map to the same name")
        self.values[name] = value


def _flatten(node: Any, segs: list[str], out: _Collector) -> dict[str, Any]:
    name = _join(segs)
    if _is_iterator(node):
        return {"t": "iterator", "name": name, "state": _flatten(node.get_state(), segs, out)}
    if node is None:
        return {"t": "none"}
    if isinstance(node, jax.core.Tracer):
        raise InvalidArgumentError(
            name, type(node).__name__, "is a tracer: save concrete arrays, outside jit/grad"
        )
    if is_jax_array(node):
        out.add(name, node)
        if is_typed_key(node):
            return {"t": "key", "name": name, "impl": key_impl_name(node)}
        return {"t": "array", "name": name, "kind": "jax"} | ({"weak": True} if node.weak_type else {})
    if isinstance(node, np.ndarray):
        out.add(name, node)
        return {"t": "array", "name": name, "kind": "numpy"}
    if isinstance(node, np.generic):
        out.add(name, np.asarray(node))
        return {"t": "array", "name": name, "kind": "scalar"}
    if isinstance(node, (bool, int, float, str)):
        return {"t": "value", "name": name, "v": node}
    level = _one_level(node)
    if level is None:
        raise InvalidArgumentError(
            name, type(node).__name__, "is not an array, a scalar or a pytree container"
        )
    kids, _ = level
    if _variable_child(node, kids):
        return {"t": "variable", "cls": type(node).__name__, "c": _flatten(kids[0][1], segs, out)}
    kind = _kind(node)
    keys, children = [], []
    for entry, child in kids:
        seg, key = _entry(entry, name)
        keys.append(key)
        children.append(_flatten(child, segs + [seg], out))
    skel: dict[str, Any] = {"t": kind, "keys": keys, "c": children}
    if kind in ("namedtuple", "node"):
        skel["cls"] = f"{type(node).__module__}.{type(node).__qualname__}"
    return skel


def flatten_pytree(
    tree: Any, *, copy: bool = False, snapshot: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a pytree into ``{name: numpy array}`` (exact bits, one batched device transfer) and its JSON structure.

    Leaves may be jax arrays (typed PRNG keys as their key data), numpy arrays and scalars, Python scalars and
    strings (kept in the structure), None, and CheckpointableIterators (their ``get_state()`` is stored).
    ``copy=True`` returns arrays that own their memory. ``snapshot=True`` returns arrays nobody can change
    afterwards at the least cost: jax arrays (immutable) as read-only host views, numpy leaves (mutable) copied.
    """
    out = _Collector()
    skeleton = _flatten(tree, [], out)
    names = list(out.values)
    jax_names = [n for n in names if is_jax_array(out.values[n])]
    fetched = dict(zip(jax_names, host_arrays([out.values[n] for n in jax_names], copy=copy), strict=True))
    arrays: dict[str, np.ndarray] = {}
    for n in names:
        if n in fetched:
            arrays[n] = fetched[n]
        else:
            a = np.asarray(out.values[n])
            arrays[n] = np.array(a, copy=True) if copy or snapshot else a
    return arrays, {"format": STRUCTURE_FORMAT, "tree": skeleton}


def pytree_to_weights(tree: Any) -> dict[str, WeightTensor]:
    """``{name: WeightTensor}`` for every array leaf of a pytree (the structure is dropped; see flatten_pytree)."""
    arrays, _ = flatten_pytree(tree)
    return {n: WeightTensor(a, WeightMetadata(n, a.shape, a.dtype)) for n, a in arrays.items()}


# ---- unflatten ---------------------------------------------------------------------------------------------
class _Source:
    """Stored arrays (eager or lazy WeightTensors) plus the stored structure's leaves, looked up by name."""

    def __init__(self, arrays: Mapping[str, Any], structure: Mapping[str, Any] | None) -> None:
        self._arrays = arrays
        self.leaves: dict[str, dict[str, Any]] = {}
        self.missing: list[str] = []
        if structure is not None:
            self._index(_tree_of(structure))

    def _index(self, skel: Mapping[str, Any]) -> None:
        t = skel.get("t")
        if "name" in skel:
            self.leaves[skel["name"]] = dict(skel)
        if t == "variable":
            self._index(skel["c"])
        elif t not in ("iterator", "array", "key", "value", "none"):
            for c in skel.get("c", []):
                self._index(c)

    def has(self, name: str) -> bool:
        return name in self._arrays

    def array(self, name: str) -> np.ndarray | None:
        value = self._arrays.get(name)
        if value is None:
            self.missing.append(name)
            return None
        return value.data if isinstance(value, WeightTensor) else np.asarray(value)


def _tree_of(structure: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(structure, Mapping) or "tree" not in structure:
        raise InvalidArgumentError(
            "structure", type(structure).__name__, "is not a structure from flatten_pytree"
        )
    if structure.get("format") != STRUCTURE_FORMAT:
        raise InvalidArgumentError(
            "structure.format", structure.get("format"), f"expected {STRUCTURE_FORMAT}"
        )
    return structure["tree"]


def _build(skel: Mapping[str, Any], src: _Source, as_numpy: bool) -> Any:
    t = skel["t"]
    if t == "none":
        return None
    if t == "value":
        return skel["v"]
    if t == "iterator":
        return _build(skel["state"], src, True)
    if t in ("array", "key"):
        arr = src.array(skel["name"])
        if arr is None:
            return None
        kind = skel.get("kind")
        if kind == "scalar":
            return arr[()]
        if kind == "numpy" or as_numpy:
            return np.array(arr, copy=True)
        return to_jax(arr, weak=bool(skel.get("weak")), impl=skel.get("impl"))
    if t == "variable":
        return _build(skel["c"], src, as_numpy)
    children = [_build(c, src, as_numpy) for c in skel["c"]]
    if t == "list":
        return children
    if t == "tuple":
        return tuple(children)
    return dict(zip(skel["keys"], children, strict=True))


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ShapeMismatchError(
            f"tensor {name!r}: stored shape {tuple(arr.shape)} != template shape {tuple(shape)}"
        )


def _cast(name: str, arr: np.ndarray, dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if arr.dtype == dtype:
        return arr
    log.warning("tensor %r: stored as %s, cast to the template's %s", name, arr.dtype, dtype)
    return arr.astype(dtype)


def _restore_like(like: Any, segs: list[str], src: _Source) -> Any:
    name = _join(segs)
    if _is_iterator(like):
        stored = src.leaves.get(name)
        if stored is None or stored.get("t") != "iterator":
            src.missing.append(f"{name} (iterator state)")
            return like
        like.set_state(_build(stored["state"], src, True))
        return like
    if like is None:
        return None
    # an nnx.RngKey Variable also reports a key dtype: it is a container, restored further down
    var = _nnx_variable_type()
    if is_typed_key(like) and not (var is not None and isinstance(like, var)):
        arr = src.array(name)
        if arr is None:
            return like
        stored = src.leaves.get(name, {})
        impl = key_impl_name(like) if is_jax_array(like) else stored.get("impl")
        if impl is None:
            raise InvalidArgumentError(
                name, "typed key", "cannot tell the PRNG implementation: pass a key array template"
            )
        out = to_jax(arr, like=like, impl=impl)
        if tuple(out.shape) != tuple(like.shape):
            raise ShapeMismatchError(
                f"key {name!r}: stored key shape {out.shape} != template shape {tuple(like.shape)}"
            )
        return out
    if is_jax_array(like) or isinstance(like, jax.ShapeDtypeStruct):
        arr = src.array(name)
        if arr is None:
            return like
        _check_shape(name, arr, like.shape)
        return to_jax(_cast(name, arr, like.dtype), like=like, weak=bool(getattr(like, "weak_type", False)))
    if isinstance(like, np.ndarray):
        arr = src.array(name)
        if arr is None:
            return like
        _check_shape(name, arr, like.shape)
        return np.array(_cast(name, arr, like.dtype), copy=True)
    if isinstance(like, np.generic):
        arr = src.array(name)
        return like if arr is None else _cast(name, arr, like.dtype)[()]
    if isinstance(like, (bool, int, float, str)):
        stored = src.leaves.get(name)
        if stored is not None and stored.get("t") == "value":
            return stored["v"]
        if src.has(name):
            return type(like)(np.asarray(src.array(name)).item())
        src.missing.append(name)
        return like
    level = _one_level(like)
    if level is None:
        raise InvalidArgumentError(
            name, type(like).__name__, "is not an array, a scalar or a pytree container"
        )
    kids, treedef = level
    if _variable_child(like, kids):
        return treedef.unflatten([_restore_like(kids[0][1], segs, src)])
    children = []
    for entry, child in kids:
        seg, _ = _entry(entry, name)
        children.append(_restore_like(child, segs + [seg], src))
    return treedef.unflatten(children)


def unflatten_pytree(
    arrays: Mapping[str, np.ndarray | WeightTensor],
    structure: Mapping[str, Any] | None = None,
    like: Any = None,
    *,
    as_numpy: bool = False,
    partial: bool = False,
) -> Any:
    """Rebuild a pytree from named arrays.

    With ``like`` (a pytree of arrays, ShapeDtypeStructs, scalars and iterators) the result has exactly its
    structure, classes, dtypes and shardings; iterators in ``like`` get their stored state through
    ``set_state``. Without it, ``structure`` (from :func:`flatten_pytree`) rebuilds dicts, lists and tuples
    (namedtuples and custom nodes come back as dicts, like Orbax does). ``as_numpy`` keeps arrays on the host.
    A leaf of ``like`` with no stored array raises RefNotFoundError, or keeps its value with ``partial=True``.
    """
    src = _Source(arrays, structure)
    if like is not None:
        out = _restore_like(like, [], src)
    elif structure is not None:
        out = _build(_tree_of(structure), src, as_numpy)
    else:
        out = _nest(arrays, src, as_numpy)
    if src.missing and not partial:
        shown = ", ".join(src.missing[:10]) + (
            f" (+{len(src.missing) - 10} more)" if len(src.missing) > 10 else ""
        )
        raise RefNotFoundError(f"{len(src.missing)} leaf(s) not found in the stored arrays: {shown}")
    return out


def _nest(arrays: Mapping[str, Any], src: _Source, as_numpy: bool) -> dict[str, Any]:
    """Without a structure: nested dicts split on ``/``, arrays as numpy (``as_numpy``) or jax."""
    out: dict[str, Any] = {}
    for name in sorted(arrays):
        parts = name.split("/")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise InvalidArgumentError("arrays", name, f"{p!r} is both an array and a folder")
            node = nxt
        arr = src.array(name)
        node[parts[-1]] = np.array(arr, copy=True) if as_numpy else to_jax(arr)
    return out


def leaf_names(tree: Any) -> list[str]:
    """The names :func:`flatten_pytree` gives the array leaves of ``tree`` (nothing is transferred)."""
    out = _Collector()
    _flatten(tree, [], out)
    return list(out.values)


__all__ = [
    "ROOT_NAME",
    "flatten_pytree",
    "key_path_name",
    "leaf_names",
    "pytree_to_weights",
    "unflatten_pytree",
]
