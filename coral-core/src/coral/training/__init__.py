"""Framework-free checkpointing for training loops: when to save, what to keep, how to resume exactly."""

from .config import CheckpointConfig
from .iterators import CheckpointableIterator, capture_data_state, restore_data_state
from .manager import CheckpointManager, restore_random_state
from .pusher import BackgroundPusher
from .state import TrainingState

__all__ = [
    "BackgroundPusher",
    "CheckpointConfig",
    "CheckpointManager",
    "CheckpointableIterator",
    "TrainingState",
    "capture_data_state",
    "restore_data_state",
    "restore_random_state",
]
