"""Framework-free checkpointing for training loops: when to save, what to keep, how to resume exactly."""

from .config import CheckpointConfig
from .iterators import CheckpointableIterator, capture_data_state, restore_data_state
from .manager import CheckpointManager, restore_random_state
from .provenance import Provenance, git_info, read_provenance
from .state import TrainingState

__all__ = [
    "CheckpointConfig",
    "CheckpointManager",
    "CheckpointableIterator",
    "Provenance",
    "TrainingState",
    "capture_data_state",
    "git_info",
    "read_provenance",
    "restore_data_state",
    "restore_random_state",
]
