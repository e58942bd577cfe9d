"""Keep the JSON-safe part of HF objects (TrainingArguments, configs, TrainerState) for commit metadata."""

from __future__ import annotations

import enum
import logging
import os
from typing import Any

log = logging.getLogger(__name__)
_DROP = object()


def json_safe(value: Any, path: str = "value") -> Any:
    """Plain JSON types only: enums become their value, paths strings, other objects are dropped (logged)."""
    out = _convert(value, path)
    return None if out is _DROP else out


def _convert(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return _convert(value.value, path)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)  # NaN/inf are tagged by coral's canonical JSON
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _convert(value.item(), path)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                log.debug("dropping %s[%r]: key is not a string", path, k)
                continue
            c = _convert(v, f"{path}.{k}")
            if c is not _DROP:
                out[str(k)] = c
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v in items if v is not _DROP]
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    log.debug("dropping %s: %s is not JSON-safe", path, type(value).__name__)
    return _DROP
