"""coral-torch: PyTorch support for Coral (also importable as ``coral.integrations.pytorch``)."""

from .convert import numpy_to_tensor, tensor_to_numpy
from .integration import PyTorchIntegration

__all__ = ["PyTorchIntegration", "numpy_to_tensor", "tensor_to_numpy"]
