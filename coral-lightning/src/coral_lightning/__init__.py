"""coral-lightning: Coral plugin for PyTorch Lightning: CoralCallback with exact resume.

Also importable as ``coral.integrations.lightning``.
"""

from .callback import CoralCallback, CoralLightningCallback, RemotesUnavailableError
from .io import CoralCheckpointIO

__all__ = ["CoralCallback", "CoralCheckpointIO", "CoralLightningCallback", "RemotesUnavailableError"]
