"""coral-torch: PyTorch support for Coral (also importable as ``coral.integrations.pytorch``).

``PyTorchIntegration`` converts models, optimizers, schedulers and RNGs; ``CoralTrainer`` and ``Checkpointer``
checkpoint a training loop and resume it exactly; ``save``/``load`` are the one-off path; ``CoralWriter``/
``CoralReader`` are torch.distributed.checkpoint storage backed by a Coral repository (sharded FSDP2 saves).
Names load on first use, so the plugin's hooks can be loaded without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.lazy import lazy_exports

if TYPE_CHECKING:
    # the redundant aliases mark these as re-exports (resolved at run time by lazy_exports below)
    from .checkpointer import Checkpointer as Checkpointer
    from .convert import numpy_to_tensor as numpy_to_tensor
    from .convert import tensor_to_numpy as tensor_to_numpy
    from .data import ResumableLoader as ResumableLoader
    from .dcp import CoralReader as CoralReader
    from .dcp import CoralWriter as CoralWriter
    from .integration import PyTorchIntegration as PyTorchIntegration
    from .lazy_snapshot import VersionGuard as VersionGuard
    from .oneoff import load as load
    from .oneoff import save as save
    from .trainer import CoralTrainer as CoralTrainer

_WHERE = {
    "Checkpointer": "checkpointer",
    "CoralTrainer": "trainer",
    "CoralReader": "dcp",
    "CoralWriter": "dcp",
    "PyTorchIntegration": "integration",
    "ResumableLoader": "data",
    "VersionGuard": "lazy_snapshot",
    "load": "oneoff",
    "save": "oneoff",
    "numpy_to_tensor": "convert",
    "tensor_to_numpy": "convert",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
