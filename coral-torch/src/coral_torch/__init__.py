"""coral-torch: PyTorch support for Coral (also importable as ``coral.integrations.pytorch``).

``PyTorchIntegration`` converts models, optimizers, schedulers and RNGs; ``CoralTrainer`` and ``Checkpointer``
checkpoint a training loop and resume it exactly; ``save``/``load`` are the one-off path.
"""

from .checkpointer import Checkpointer
from .convert import numpy_to_tensor, tensor_to_numpy
from .data import ResumableLoader
from .integration import PyTorchIntegration
from .oneoff import load, save
from .trainer import CoralTrainer

__all__ = [
    "Checkpointer",
    "CoralTrainer",
    "PyTorchIntegration",
    "ResumableLoader",
    "load",
    "numpy_to_tensor",
    "save",
    "tensor_to_numpy",
]
