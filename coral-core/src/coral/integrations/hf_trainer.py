"""``coral.integrations.hf_trainer``: the HuggingFace Trainer integration, re-exported from ``coral_hf``
(pip install coral-hf)."""

from ._shim import lazy

__all__, __getattr__, __dir__ = lazy("coral_hf", "coral-hf", "coral.integrations.hf_trainer")
