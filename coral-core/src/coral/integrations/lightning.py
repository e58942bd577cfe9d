"""``coral.integrations.lightning``: the Lightning integration, re-exported from ``coral_lightning`` (pip install coral-lightning)."""

from ._shim import load

_mod = load("coral_lightning", "coral-lightning", "coral.integrations.lightning")
__all__ = list(getattr(_mod, "__all__", []))
globals().update({name: getattr(_mod, name) for name in __all__})
