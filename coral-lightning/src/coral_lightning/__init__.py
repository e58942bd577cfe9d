"""coral-lightning: Coral plugin for PyTorch Lightning: CoralCallback with exact resume.

Also importable as ``coral.integrations.lightning``. Names load on first use, so loading Coral's plugins
never imports Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from coral.errors import RemotesUnavailableError

if TYPE_CHECKING:
    from .callback import CoralCallback, CoralLightningCallback
    from .io import CoralCheckpointIO

_WHERE = {"CoralCallback": "callback", "CoralLightningCallback": "callback", "CoralCheckpointIO": "io"}
__all__ = ["CoralCallback", "CoralCheckpointIO", "CoralLightningCallback", "RemotesUnavailableError"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coral_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
