"""Framework-free checkpointing for training loops: when to save, what to keep, how to resume exactly."""

from .callback_setup import CallbackOptions, CallbackSetup
from .config import CheckpointConfig
from .history import CheckpointHistory
from .iterators import CheckpointableIterator, capture_data_state, restore_data_state
from .layout import STATE_PREFIXES, load_checkpoint_commit
from .manager import CheckpointManager
from .policy import SavePolicy
from .preemption import PreemptionGuard, PreemptionHandler, exit_code
from .provenance import Provenance, git_info, read_provenance
from .pusher import BackgroundPusher
from .retention import RetentionRules, prune_commits, select_kept
from .rng import capture_random_state, restore_random_state
from .snapshot import HostSnapshot
from .state import TrainingState
from .writer import BackgroundSaver

__all__ = [
    "STATE_PREFIXES",
    "BackgroundPusher",
    "BackgroundSaver",
    "CallbackOptions",
    "CallbackSetup",
    "CheckpointConfig",
    "CheckpointHistory",
    "CheckpointManager",
    "CheckpointableIterator",
    "HostSnapshot",
    "Provenance",
    "RetentionRules",
    "PreemptionGuard",
    "PreemptionHandler",
    "SavePolicy",
    "TrainingState",
    "capture_data_state",
    "capture_random_state",
    "exit_code",
    "git_info",
    "load_checkpoint_commit",
    "prune_commits",
    "read_provenance",
    "restore_data_state",
    "restore_random_state",
    "select_kept",
]
