"""``coral.integrations.lightning``: the Lightning integration, re-exported from ``coral_lightning``
(pip install coral-lightning)."""

from ._shim import lazy

__all__, __getattr__, __dir__ = lazy("coral_lightning", "coral-lightning", "coral.integrations.lightning")
