"""``coral.integrations.jax``: the JAX integration, re-exported from ``coral_jax`` (pip install coral-jax)."""

from ._shim import load

_mod = load("coral_jax", "coral-jax", "coral.integrations.jax")
__all__ = list(getattr(_mod, "__all__", []))
globals().update({name: getattr(_mod, name) for name in __all__})
