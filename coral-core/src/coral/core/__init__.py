"""Tensor value types: WeightTensor, WeightMetadata and the dtype table."""

from .dtypes import dtype_from_name, dtype_name
from .weight_tensor import WeightMetadata, WeightTensor

__all__ = ["WeightMetadata", "WeightTensor", "dtype_from_name", "dtype_name"]
