"""``coral.integrations.pytorch``: PyTorch integration, re-exported from ``coral_torch`` (pip install coral-torch)."""

from ._shim import load

_mod = load("coral_torch", "coral-torch", "coral.integrations.pytorch")
__all__ = list(getattr(_mod, "__all__", []))
globals().update({name: getattr(_mod, name) for name in __all__})
