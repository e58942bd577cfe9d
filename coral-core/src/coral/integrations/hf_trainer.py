"""``coral.integrations.hf_trainer``: the HuggingFace Trainer integration, re-exported from ``coral_hf``
(pip install coral-hf)."""

from ._shim import load

_names = load("coral_hf", "coral-hf", "coral.integrations.hf_trainer")
__all__ = sorted(_names)
globals().update(_names)
