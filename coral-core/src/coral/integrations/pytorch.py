"""``coral.integrations.pytorch``: PyTorch integration, re-exported from ``coral_torch`` (pip install coral-torch)."""

from ._shim import lazy

__all__, __getattr__, __dir__ = lazy("coral_torch", "coral-torch", "coral.integrations.pytorch")
