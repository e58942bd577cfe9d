"""Reading a CheckpointConfig from files written for other tools: nested tables, human sizes, known aliases.

A ``[checkpoint]`` table may hold sub-tables (``[checkpoint.cleanup]``): their keys are read as if they stood in
``[checkpoint]``. Keys of LlamaHome-style files (``save_steps``, ``keep_last_n``, ``metric_for_best``,
``[checkpoint.cleanup] max_checkpoints`` ...) map onto CheckpointConfig fields; keys that only describe another
tool's on-disk layout (``save_dir``, ``save_format``, ``save_metrics``) are ignored with a log line.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

RENAMED = {
    "save_steps": "save_every_n_steps",
    "keep_last_n": "keep_last_n_checkpoints",
    "keep_best_n": "keep_best_n_checkpoints",
    "save_optimizer": "save_optimizer_state",
    "save_scheduler": "save_scheduler_state",
    "save_random": "save_random_state",
    "metric_for_best": "save_on_best_metric",
}
"""Alias -> CheckpointConfig field, same meaning."""
IGNORED = frozenset({"save_dir", "save_format", "save_metrics"})
"""Keys that describe another tool's files: Coral keeps checkpoints in its repository, metrics always."""


def parse_size(name: str, value: Any) -> int | None:
    """Bytes from an int or a human size: ``"10GB"`` (10**9), ``"512MiB"`` (2**20 units), ``"1.5 TB"``."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError(name, value, "must be a number of bytes or a size such as '10GB' or '512MiB'")


def checkpoint_fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    """CheckpointConfig keyword arguments from a ``[checkpoint]`` table (sub-tables and aliases resolved)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            if key == "cleanup" and value.get("enabled") is False:
                log.info("checkpoint config: [checkpoint.cleanup] has enabled = false; its keys are ignored")
                continue
            for sub, sub_value in value.items():
                if sub == "enabled" and key == "cleanup":
                    continue
                if isinstance(sub_value, dict):
                    raise ConfigError(f"{key}.{sub}", sub_value, f"is nested too deeply in {where}")
                if sub in flat:
                    raise ConfigError(f"{key}.{sub}", sub_value, f"is also set elsewhere in {where}")
                flat[sub] = sub_value
        elif key in flat:
            raise ConfigError(key, value, f"is also set in a sub-table of {where}")
        else:
            flat[key] = value
    return _resolve_aliases(flat)


def _resolve_aliases(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    save_best = flat.pop("save_best", None)
    greater = flat.pop("greater_is_better", None)
    save_epochs = flat.pop("save_epochs", None)
    max_checkpoints = flat.pop("max_checkpoints", None)
    for key, value in flat.items():
        if key in IGNORED:
            log.info("checkpoint config: %s=%r has no meaning for Coral; ignored", key, value)
            continue
        field = RENAMED.get(key, key)
        if field in out:
            raise ConfigError(key, value, f"sets {field}, which is already set")
        out[field] = value
    if save_epochs is not None:
        if isinstance(save_epochs, bool):
            save_epochs = 1 if save_epochs else None
        out.setdefault("save_every_n_epochs", save_epochs)
    if greater is not None:
        if not isinstance(greater, bool):
            raise ConfigError("greater_is_better", greater, "must be true or false")
        out.setdefault("minimize_metric", not greater)
    if save_best is True:
        out.setdefault("save_on_best_metric", "loss")
    elif save_best is False:
        out.pop("save_on_best_metric", None)  # keep_best_n_checkpoints still ranks by loss
    elif save_best is not None:
        raise ConfigError("save_best", save_best, "must be true or false")
    if max_checkpoints is not None:
        last = out.get("keep_last_n_checkpoints")
        if isinstance(max_checkpoints, int) and isinstance(last, int):
            out["keep_last_n_checkpoints"] = min(last, max_checkpoints)
        else:
            out.setdefault("keep_last_n_checkpoints", max_checkpoints)
    return out
