"""What a checkpoint commit holds: model weights, plus state tensors under reserved roots, and how to read it back.

Optimizer/scheduler/RNG/data tensors live in the tree under ``optim/``, ``sched/``, ``rng/`` and ``data/``; the
JSON-safe rest of the TrainingState (and the skeletons that put the tensors back in place) in metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import InvalidArgumentError
from ..plugins import preload as preload_plugins
from ..version_control.repository import Repository
from .config import CheckpointConfig
from .iterators import capture_data_state
from .rng import capture_random_state
from .state import TrainingState
from .tensors_in_state import join_state, split_state

STATE_PREFIXES = {"optimizer_state": "optim", "scheduler_state": "sched", "random_state": "rng", "data_state": "data"}
"""TrainingState field -> the tree root its tensors are stored under."""
STATE_ROOTS = frozenset(STATE_PREFIXES.values())
RESERVED_METADATA = frozenset({"coral_checkpoint", "epoch", "global_step", "loss", "metrics"})
"""Commit metadata keys the manager writes itself."""

T = TypeVar("T")


def is_state_name(name: str) -> bool:
    """True for a tensor name under one of the reserved state roots (``optim/...``, ``rng/...``)."""
    return name.split("/", 1)[0] in STATE_ROOTS


def model_only(items: Mapping[str, T]) -> dict[str, T]:
    """The entries of ``items`` that are model weights (state tensors left out)."""
    return {n: v for n, v in items.items() if not is_state_name(n)}


def check_weight_names(names: Any) -> None:
    """Refuse model weight names that would collide with the state roots."""
    for name in names:
        if is_state_name(name):
            raise InvalidArgumentError("weights", name, f"names starting with {name.split('/')[0]}/ are reserved")


def check_extra_metadata(extra: Mapping[str, Any]) -> None:
    """Refuse caller metadata that would overwrite the keys the manager writes."""
    clash = sorted(set(extra) & RESERVED_METADATA)
    if clash:
        raise InvalidArgumentError(
            "metadata", clash[0], f"is reserved (reserved keys: {', '.join(sorted(RESERVED_METADATA))})"
        )


def capture_state(state: TrainingState, config: CheckpointConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split the state fields the config keeps into tree tensors and JSON skeletons (RNG captured if not given)."""
    include = {
        "optimizer_state": config.save_optimizer_state,
        "scheduler_state": config.save_scheduler_state,
        "random_state": config.save_random_state,
        "data_state": True,
    }
    arrays: dict[str, np.ndarray] = {}
    skeletons: dict[str, Any] = {}
    for fname, prefix in STATE_PREFIXES.items():
        if not include[fname]:
            continue
        value = getattr(state, fname)
        if fname == "random_state" and value is None:
            value = capture_random_state() or None
        if fname == "data_state":
            value = capture_data_state(value)
        if value is None:
            continue
        skeletons[fname] = split_state(value, prefix, arrays)
    return arrays, skeletons


def load_checkpoint_commit(repository: Repository, commit_hash: str) -> dict[str, Any]:
    """Rebuild ``{"weights", "state", "commit_hash"}`` from a checkpoint commit (any experiment)."""
    preload_plugins()  # a restore sets the RNGs through the plugin hooks: load them while the chunks are read
    commit = repository.get_commit(commit_hash)
    # every tensor is needed: one batched read sends all chunks through the pool at once (a resume is
    # bound by this read), instead of reading tensor after tensor as lazy WeightTensors would
    arrays = repository.load_arrays(commit_hash)
    meta = commit.metadata.get("coral_checkpoint") or {}
    weights = {
        n: WeightTensor(arrays[n], WeightMetadata(n, e.shape, e.dtype, layer_type=e.layer_type))
        for n, e in commit.tree.items()
        if not is_state_name(n)
    }
    state_arrays = {n: a for n, a in arrays.items() if is_state_name(n)}
    info = dict(
        meta.get("training_state")
        or {"epoch": commit.metadata.get("epoch", 0), "global_step": commit.metadata.get("global_step", 0)}
    )
    for fname, skeleton in (meta.get("state_skeletons") or {}).items():
        if fname in STATE_PREFIXES:
            info[fname] = join_state(skeleton, state_arrays)
    known = set(TrainingState.__dataclass_fields__)
    state = TrainingState(**{k: v for k, v in info.items() if k in known})
    return {"weights": weights, "state": state, "commit_hash": repository.resolve(commit_hash)}
