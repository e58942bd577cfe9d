"""Framework integrations. Each submodule re-exports a plugin package and names it when it is missing.

``coral.integrations.pytorch`` -> coral-torch, ``.lightning`` -> coral-lightning, ``.hf_trainer`` -> coral-hf,
``.jax`` -> coral-jax. Trackers (``MLflowBridge``, the ``Tracker`` protocol) live here and need no framework.
"""

from .trackers import MLflowBridge, Tracker

__all__ = ["MLflowBridge", "Tracker"]
