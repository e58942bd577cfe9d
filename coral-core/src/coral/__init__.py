"""Coral: version control and checkpoint management for neural-network weights.

``import coral`` loads no ML framework; framework support comes from plugins (coral-torch, coral-jax, ...).
"""

from .core.weight_tensor import WeightMetadata, WeightTensor
from .errors import CoralError, CorruptObjectError, CorruptRefError, RefNotFoundError
from .hookspecs import hookimpl
from .plugins import get_plugin_manager
from .version_control.background import BackgroundJob, BackgroundWork
from .version_control.repository import Repository
from .version_control.soup import SoupResult, greedy_soup

__version__ = "0.1.0"

__all__ = [
    "BackgroundJob",
    "BackgroundWork",
    "CoralError",
    "CorruptObjectError",
    "CorruptRefError",
    "RefNotFoundError",
    "Repository",
    "SoupResult",
    "WeightMetadata",
    "WeightTensor",
    "__version__",
    "get_plugin_manager",
    "greedy_soup",
    "hookimpl",
]
