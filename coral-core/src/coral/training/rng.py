"""Every generator a checkpoint captures: gathered from and handed back to the installed plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def capture_random_state() -> dict[str, Any]:
    """The merged generator states of every plugin (python, numpy, torch, CUDA, tracked JAX keys)."""
    from ..plugins import hook

    merged: dict[str, Any] = {}
    for part in hook().coral_get_rng_state():
        if part:
            merged.update(part)
    return merged


def restore_random_state(random_state: Mapping[str, Any] | None) -> None:
    """Restore every generator captured in a checkpoint's ``state.random_state`` (python, numpy, and whatever the
    installed plugins own: torch, CUDA, tracked JAX keys). Call it right before training continues."""
    if not random_state:
        return
    from ..plugins import hook

    hook().coral_set_rng_state(state=dict(random_state))
