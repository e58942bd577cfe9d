"""coral-lightning: Coral plugin for PyTorch Lightning: CoralCallback with exact resume.

Also importable as ``coral.integrations.lightning``. Names load on first use, so loading Coral's plugins
never imports Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.errors import RemotesUnavailableError
from coral.lazy import lazy_exports

if TYPE_CHECKING:
    from .callback import CoralCallback, CoralLightningCallback
    from .io import CoralCheckpointIO

_WHERE = {"CoralCallback": "callback", "CoralLightningCallback": "callback", "CoralCheckpointIO": "io"}
__all__ = ["CoralCallback", "CoralCheckpointIO", "CoralLightningCallback", "RemotesUnavailableError"]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
