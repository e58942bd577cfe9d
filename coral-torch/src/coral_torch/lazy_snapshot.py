"""The lazy snapshot of an async save: live tensors copied in the background, the optimizer's step gated on it.

In an ordinary loop parameters and optimizer state change only inside ``optimizer.step()`` (DataStates-LLM,
HPDC'24), so ``save`` can return at once and the copy can run during the next forward and backward; a step
pre-hook waits for the copy only when it is not finished. Each tracked tensor's version counter (bumped by
every in-place write torch sees) is recorded at ``save`` and checked after its copy: a write outside
``step()`` fails that save loudly instead of committing a mix of two states. Writes through ``.data`` bypass
the version counter; code that writes that way, or EMA/manual updates outside ``step()``, asks for
``snapshot="copy"``. Buffers (BatchNorm running statistics change in ``forward``) are always copied at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from coral.core.weight_tensor import WeightTensor

SNAPSHOTS = ("lazy", "copy")
"""``Checkpointer(snapshot=...)``: ``"lazy"`` (default with ``async_save``), ``"copy"`` (copied in ``save``)."""


class VersionGuard:
    """The version each live tensor had when ``save`` was called; ``__call__(name)`` says if it changed since."""

    def __init__(self) -> None:
        self._tracked: dict[str, tuple[torch.Tensor, int]] = {}

    def track(self, name: str, tensor: torch.Tensor) -> None:
        self._tracked[name] = (tensor, tensor._version)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tracked)

    def __call__(self, name: str) -> str | None:
        got = self._tracked.get(name)
        if got is None:
            return None  # not live: copied when save was called
        tensor, version = got
        if tensor._version != version:
            return f"version {version} -> {tensor._version}: written in place outside optimizer.step()"
        return None


def lazy_weights(
    model: torch.nn.Module, weights: Mapping[str, WeightTensor], guard: VersionGuard
) -> dict[str, WeightTensor]:
    """``weights`` (views of the model's tensors) with the parameters tracked and every other tensor copied now."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    live = model.state_dict(keep_vars=False)  # detached: same storage, same version counter as the parameter
    out: dict[str, WeightTensor] = {}
    for name, wt in weights.items():
        tensor = live.get(name)
        if name in params and isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and _shares(wt, tensor):
            guard.track(name, tensor)
            out[name] = wt
        else:  # a buffer (changes in forward), or already a private copy (a GPU tensor brought to the host)
            out[name] = wt if not _shares(wt, tensor) else WeightTensor(np.array(wt.data, copy=True), wt.metadata)
    return out


def track_optimizer(optimizer: torch.optim.Optimizer, guard: VersionGuard, prefix: str = "optim") -> None:
    """Track every CPU tensor of the optimizer's state under the name ``split_state`` gives its array."""

    def walk(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.device.type == "cpu":
                guard.track(name, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}/{i}")

    walk(optimizer.state_dict(), prefix)


def _shares(wt: WeightTensor, tensor: Any) -> bool:
    """True when the array is a view of the tensor's memory (not a copy made on the way to the host)."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    data = wt.data
    return isinstance(data, np.ndarray) and data.__array_interface__["data"][0] == tensor.data_ptr()
