"""TrainingState: everything about a training run at a checkpoint except the model weights."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..store.atomicfile import atomic_write
from .tensors_in_state import decode_inline, encode_inline

_STATE_FIELDS = ("optimizer_state", "scheduler_state", "random_state", "data_state")


@dataclass
class TrainingState:
    """Progress, metrics, optimizer/scheduler/RNG/data state and run description at one checkpoint."""

    epoch: int = 0
    global_step: int = 0
    learning_rate: float | None = None
    loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer_state: Any = None
    scheduler_state: Any = None
    random_state: Any = None
    data_state: Any = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    model_name: str | None = None
    dataset_name: str | None = None
    experiment_name: str | None = None
    notes: str | None = None

    def __post_init__(self) -> None:
        for name in ("epoch", "global_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                try:
                    if float(v).is_integer() and float(v) >= 0 and not isinstance(v, bool):
                        setattr(self, name, int(v))
                        continue
                except (TypeError, ValueError, OverflowError):
                    pass
                raise InvalidArgumentError(name, v, "must be a non-negative integer")
        for name in ("model_name", "dataset_name", "experiment_name", "notes"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise InvalidArgumentError(name, v, "must be a string or None")
        if self.metrics is None:
            self.metrics = {}
        if not isinstance(self.metrics, dict):
            raise InvalidArgumentError("metrics", self.metrics, "must be a dict of name -> value")
        for k in self.metrics:
            if not isinstance(k, str):
                raise InvalidArgumentError("metrics", k, "metric names must be strings")

    def update_metrics(self, **metrics: Any) -> None:
        """Merge metric values into ``metrics``."""
        self.metrics.update(metrics)

    def format_summary(self) -> str:
        """One line such as ``Epoch: 10 | Step: 5000 | Learning Rate: 1.00e-04 | Loss: 0.2340 | accuracy: 0.9600``."""
        parts = [f"Epoch: {self.epoch}", f"Step: {self.global_step}"]
        if self.learning_rate is not None:
            parts.append(f"Learning Rate: {self.learning_rate:.2e}")
        if self.loss is not None:
            parts.append(f"Loss: {_fmt(self.loss)}")
        for k, v in self.metrics.items():
            parts.append(f"{k}: {_fmt(v)}")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A dict of every field (state fields as captured, arrays kept as arrays)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingState:
        if not isinstance(data, dict):
            raise InvalidArgumentError("data", type(data).__name__, "expected a dict")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgumentError("data", sorted(unknown), "unknown TrainingState fields")
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state as one JSON file (arrays inlined as base64, never as lists), atomically."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _STATE_FIELDS}
        doc["metrics"] = dict(self.metrics)
        inline = encode_inline({"fields": doc, **{k: getattr(self, k) for k in _STATE_FIELDS}})
        # a temp file of its own per call, fsynced before the rename: concurrent savers and crashes leave a
        # whole file, never a mix or an empty one
        atomic_write(path, json.dumps(inline, allow_nan=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingState:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError("path", str(path), f"not a TrainingState file: {exc}") from None
        doc = decode_inline(raw)
        values = dict(doc.pop("fields"))
        values.update(doc)
        return cls.from_dict(values)

    def copy_without_state(self) -> dict[str, Any]:
        d = asdict(self) if False else {f.name: getattr(self, f.name) for f in fields(self)}
        for k in _STATE_FIELDS:
            d.pop(k)
        return d


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4f}"
    return str(v)
