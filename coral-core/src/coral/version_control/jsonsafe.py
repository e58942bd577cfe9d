"""Canonical JSON for commits and metadata: NaN/inf and numpy scalars survive, and hashes are stable."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

_FLOAT_TAG = "__float__"
_DICT_TAG = "__dict__"  # wraps a user's dict that looks like one of these tags, so it comes back as the dict
_TAGS = (_FLOAT_TAG, _DICT_TAG)


def to_jsonable(value: Any, path: str = "metadata") -> Any:
    """Convert to plain JSON types; non-finite floats become ``{"__float__": "nan"}``. Raises on the rest."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isfinite(f):
            return f
        return {_FLOAT_TAG: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise InvalidArgumentError(path, k, "keys must be strings")
            out[str(k)] = to_jsonable(v, f"{path}[{k!r}]")
        if len(out) == 1 and next(iter(out)) in _TAGS:  # e.g. a user's {"__float__": "inf"}: escape it
            return {_DICT_TAG: out}
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return to_jsonable(value.item(), path)
    raise InvalidArgumentError(path, type(value).__name__, "is not JSON-serializable (use tensors for arrays)")


def from_jsonable(value: Any) -> Any:
    """Undo ``to_jsonable``: tagged floats become floats again, escaped user dicts come back as written."""
    if isinstance(value, dict):
        if len(value) == 1 and _FLOAT_TAG in value:
            return float(value[_FLOAT_TAG])
        if len(value) == 1 and isinstance(value.get(_DICT_TAG), dict):  # an escaped user dict: not a tag
            return {k: from_jsonable(v) for k, v in value[_DICT_TAG].items()}
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def canonical_dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
