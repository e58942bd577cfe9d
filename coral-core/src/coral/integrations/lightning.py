"""``coral.integrations.lightning``: the Lightning integration, re-exported from ``coral_lightning``
(pip install coral-lightning)."""

from ._shim import load

_names = load("coral_lightning", "coral-lightning", "coral.integrations.lightning")
__all__ = sorted(_names)
globals().update(_names)
