"""``coral.integrations.jax``: the JAX integration, re-exported from ``coral_jax`` (pip install coral-jax)."""

from ._shim import lazy

__all__, __getattr__, __dir__ = lazy("coral_jax", "coral-jax", "coral.integrations.jax")
