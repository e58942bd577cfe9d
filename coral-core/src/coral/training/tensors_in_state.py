"""Split nested training state into a JSON skeleton plus named arrays, and join them back.

Optimizer moments must be stored as tensors (deduplicated, delta-encoded), never as JSON lists: arrays
are replaced by ``{"__tensor__": name}`` markers and returned separately.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from ..core.dtypes import dtype_from_name, dtype_name
from ..errors import InvalidArgumentError
from ..version_control.jsonsafe import from_jsonable, to_jsonable

TENSOR = "__tensor__"
NDARRAY = "__ndarray__"
TUPLE = "__tuple__"


KIND = "__kind__"


def _to_array(value: Any) -> tuple[np.ndarray | None, str | None]:
    """The array behind ``value`` and, for a framework tensor, its kind (top-level module, e.g. ``"torch"``)."""
    if isinstance(value, np.ndarray):
        return value, None
    if isinstance(value, (str, bytes, int, float, bool, type(None), dict, list, tuple)):
        return None, None
    from ..plugins import hook

    arr = hook().coral_tensor_to_array(value=value)
    return arr, (type(value).__module__.split(".")[0] if arr is not None else None)


def _from_array(array: np.ndarray, kind: str | None) -> Any:
    """Give back the framework tensor that was saved when a plugin for its kind is installed, else the array."""
    if kind is None:
        return array
    from ..plugins import hook

    tensor = hook().coral_array_to_tensor(array=array, kind=kind)
    return array if tensor is None else tensor


def split_state(value: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Return a JSON skeleton of ``value``; arrays (any size, 0-d too) go into ``arrays`` under ``prefix/...``.

    A framework tensor's marker records its kind so that :func:`join_state` can give back the same type.
    """
    arr, kind = _to_array(value)
    if arr is not None:
        arrays[prefix] = np.asarray(arr)
        return {TENSOR: prefix} if kind is None else {TENSOR: prefix, KIND: kind}
    if isinstance(value, dict):
        return {str(k): split_state(v, f"{prefix}/{k}", arrays) for k, v in value.items()} | (
            {"__intkeys__": [k for k in value if isinstance(k, int)]} if any(isinstance(k, int) for k in value) else {}
        )
    if isinstance(value, tuple):
        return {TUPLE: [split_state(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [split_state(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
    return to_jsonable(value, prefix)


def join_state(skeleton: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_state` (int dict keys and tuples come back as they were)."""
    if isinstance(skeleton, dict):
        if TENSOR in skeleton and (len(skeleton) == 1 or (len(skeleton) == 2 and KIND in skeleton)):
            return _from_array(arrays[skeleton[TENSOR]], skeleton.get(KIND))
        if TUPLE in skeleton and len(skeleton) == 1:
            return tuple(join_state(v, arrays) for v in skeleton[TUPLE])
        if "__float__" in skeleton and len(skeleton) == 1:
            return from_jsonable(skeleton)
        intkeys = {str(k): k for k in skeleton.get("__intkeys__", [])}
        return {intkeys.get(k, k): join_state(v, arrays) for k, v in skeleton.items() if k != "__intkeys__"}
    if isinstance(skeleton, list):
        return [join_state(v, arrays) for v in skeleton]
    return skeleton


def encode_inline(value: Any) -> Any:
    """JSON form with arrays inlined as base64 (for ``TrainingState.save`` to a single file)."""
    arrays: dict[str, np.ndarray] = {}
    skeleton = split_state(value, "t", arrays)
    blobs = {
        k: {"dtype": dtype_name(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}
        for k, a in arrays.items()
    }
    return {"skeleton": skeleton, NDARRAY: blobs}


def decode_inline(doc: Any) -> Any:
    if not isinstance(doc, dict) or "skeleton" not in doc:
        return from_jsonable(doc)
    arrays = {}
    for k, b in doc.get(NDARRAY, {}).items():
        dt = dtype_from_name(b["dtype"])
        raw = base64.b64decode(b["b64"])
        shape = tuple(int(s) for s in b["shape"])
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise InvalidArgumentError("state file", k, "array size does not match its shape")
        arrays[k] = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    return join_state(doc["skeleton"], arrays)
