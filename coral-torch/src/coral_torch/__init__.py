"""coral-torch: PyTorch support for Coral (also importable as ``coral.integrations.pytorch``).

``PyTorchIntegration`` converts models, optimizers, schedulers and RNGs; ``CoralTrainer`` and ``Checkpointer``
checkpoint a training loop and resume it exactly; ``save``/``load`` are the one-off path; ``CoralWriter``/
``CoralReader`` are torch.distributed.checkpoint storage backed by a Coral repository (sharded FSDP2 saves). Names load on first
use, so the plugin's hooks can be loaded without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpointer import Checkpointer
    from .convert import numpy_to_tensor, tensor_to_numpy
    from .dcp import CoralReader, CoralWriter
    from .data import ResumableLoader
    from .integration import PyTorchIntegration
    from .oneoff import load, save
    from .trainer import CoralTrainer

_WHERE = {
    "Checkpointer": "checkpointer",
    "CoralTrainer": "trainer",
    "CoralReader": "dcp",
    "CoralWriter": "dcp",
    "PyTorchIntegration": "integration",
    "ResumableLoader": "data",
    "load": "oneoff",
    "save": "oneoff",
    "numpy_to_tensor": "convert",
    "tensor_to_numpy": "convert",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
