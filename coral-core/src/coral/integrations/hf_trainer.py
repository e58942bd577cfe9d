"""``coral.integrations.hf_trainer``: the HuggingFace Trainer integration, re-exported from ``coral_hf`` (pip install coral-hf)."""

from ._shim import load

_mod = load("coral_hf", "coral-hf", "coral.integrations.hf_trainer")
__all__ = list(getattr(_mod, "__all__", []))
globals().update({name: getattr(_mod, name) for name in __all__})
