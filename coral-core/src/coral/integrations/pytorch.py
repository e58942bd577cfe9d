"""``coral.integrations.pytorch``: PyTorch integration, re-exported from ``coral_torch`` (pip install coral-torch)."""

from ._shim import load

_names = load("coral_torch", "coral-torch", "coral.integrations.pytorch")
__all__ = sorted(_names)
globals().update(_names)
