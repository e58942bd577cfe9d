"""``coral.integrations.jax``: the JAX integration, re-exported from ``coral_jax`` (pip install coral-jax)."""

from ._shim import load

_names = load("coral_jax", "coral-jax", "coral.integrations.jax")
__all__ = sorted(_names)
globals().update(_names)
