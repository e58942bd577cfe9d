"""Lightning's checkpoint dict <-> the parts of a Coral checkpoint commit, bit for bit and without pickle.

Model weights become tree tensors under their ``state_dict`` names; optimizer and scheduler states go to the
manager's ``optim/`` and ``sched/`` fields; everything else Lightning writes (loop progress, callback states,
precision-plugin state, user additions from ``on_save_checkpoint``) becomes a JSON skeleton whose tensors are
stored by index under ``data/lightning/``. Hyperparameters go to the commit metadata.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from coral.errors import CheckpointError
from coral.training.manager import load_checkpoint_commit
from coral.version_control.repository import Repository
from coral_torch.convert import numpy_to_tensor, tensor_to_numpy

log = logging.getLogger(__name__)

FORMAT = 1
TORCH = "__coral_torch__"
NDARRAY = "__coral_ndarray__"
BYTES = "__coral_bytes__"
REPR = "__coral_repr__"
PER_RANK = "__per_rank__"
HPARAMS_KEYS = {"hyper_parameters": "hparams", "datamodule_hyper_parameters": "datamodule_hparams"}
_TYPE_KEYS = ("hparams_type", "datamodule_hparams_type")  # Python classes (OmegaConf containers): not storable


@dataclass
class CheckpointParts:
    """One Lightning checkpoint, split the way a Coral commit stores it."""

    weights: dict[str, np.ndarray]
    optimizer_state: Any
    scheduler_state: Any
    data_state: dict[str, Any]
    metadata: dict[str, Any]


def _leaf(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return {BYTES: base64.b64encode(bytes(value)).decode()}
    log.warning("Coral stores %s (a %s) as its repr: it will come back as a string", where, type(value).__name__)
    return {REPR: repr(value)}


def _key(k: Any, where: str) -> Any:
    if isinstance(k, str) or (isinstance(k, int) and not isinstance(k, bool)):
        return k
    log.warning("Coral stores the key %r in %s as a string", k, where)
    return str(k)


def detach(value: Any, tensors: dict[str, np.ndarray], where: str = "checkpoint") -> Any:
    """A JSON-safe copy of ``value`` whose tensors and arrays are replaced by index markers into ``tensors``."""
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = tensor_to_numpy(value)
        return {TORCH: key}
    if isinstance(value, np.ndarray):
        key = str(len(tensors))
        tensors[key] = np.array(value, copy=True)
        return {NDARRAY: key}
    if isinstance(value, Mapping):
        return {_key(k, where): detach(v, tensors, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(detach(v, tensors, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [detach(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    return _leaf(value, where)


def attach(skeleton: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`detach`: tensors come back as torch tensors, arrays as arrays."""
    if isinstance(skeleton, dict):
        if len(skeleton) == 1:
            (k, v), = skeleton.items()
            if k == TORCH:
                return numpy_to_tensor(np.asarray(tensors[v]))
            if k == NDARRAY:
                return np.array(tensors[v], copy=True)
            if k == BYTES:
                return base64.b64decode(v)
            if k == REPR:
                return v
        return {k: attach(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, tuple):
        return tuple(attach(v, tensors) for v in skeleton)
    if isinstance(skeleton, list):
        return [attach(v, tensors) for v in skeleton]
    return skeleton


def to_numpy_tree(value: Any, where: str) -> Any:
    """Optimizer/scheduler state with tensors as exact numpy arrays and every other leaf JSON-safe."""
    if isinstance(value, torch.Tensor):
        return tensor_to_numpy(value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Mapping):
        return {_key(k, where): to_numpy_tree(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_numpy_tree(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [to_numpy_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return _leaf(value, where)


def to_torch_tree(value: Any) -> Any:
    """Inverse of :func:`to_numpy_tree` (torch optimizers and schedulers hold tensors, never numpy arrays)."""
    if isinstance(value, np.ndarray):
        return numpy_to_tensor(value)
    if isinstance(value, dict):
        if len(value) == 1 and BYTES in value:
            return base64.b64decode(value[BYTES])
        if len(value) == 1 and REPR in value:
            return value[REPR]
        return {k: to_torch_tree(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_torch_tree(v) for v in value)
    if isinstance(value, list):
        return [to_torch_tree(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """Best-effort JSON value for display metadata (hyperparameters, attributes): numbers stay numbers."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else (value.tolist() if value.numel() <= 64 else repr(value))
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else (value.tolist() if value.size <= 64 else repr(value))
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def split_checkpoint(checkpoint: Mapping[str, Any], include_optimizer: bool) -> CheckpointParts:
    """Split what ``dump_checkpoint`` returned into weights, optimizer/scheduler state, loop state and metadata."""
    rest = dict(checkpoint)
    state_dict = rest.pop("state_dict", {}) or {}
    weights = {name: tensor_to_numpy(t) for name, t in state_dict.items() if isinstance(t, torch.Tensor)}
    extra = {name: v for name, v in state_dict.items() if not isinstance(v, torch.Tensor)}
    if extra:
        rest["__state_dict_extra__"] = extra
    optimizer_states = rest.pop("optimizer_states", None)
    lr_schedulers = rest.pop("lr_schedulers", None)
    metadata: dict[str, Any] = {}
    for key, meta_key in HPARAMS_KEYS.items():
        if key in rest:
            metadata[meta_key] = plain(rest.pop(key))
    for key in _TYPE_KEYS:
        rest.pop(key, None)
    tensors: dict[str, np.ndarray] = {}
    skeleton = detach(rest, tensors, "checkpoint")
    return CheckpointParts(
        weights=weights,
        optimizer_state=to_numpy_tree(optimizer_states, "optimizer_states") if include_optimizer and optimizer_states is not None else None,
        scheduler_state=to_numpy_tree(lr_schedulers, "lr_schedulers") if include_optimizer and lr_schedulers is not None else None,
        data_state={"lightning": {"format": FORMAT, "skeleton": skeleton, "tensors": tensors}},
        metadata=metadata,
    )


def is_lightning_commit(metadata: Mapping[str, Any]) -> bool:
    light = metadata.get("lightning")
    return isinstance(light, Mapping) and "format" in light


def build_checkpoint(repo: Repository, commit_hash: str) -> dict[str, Any]:
    """Rebuild the dict Lightning restores from (``trainer.fit(ckpt_path=...)``) out of a CoralCallback commit.

    The extra key ``"coral"`` carries the commit hash and the captured RNG state for the callback to restore.
    """
    commit = repo.get_commit(commit_hash)
    if not is_lightning_commit(commit.metadata):
        raise CheckpointError(
            f"commit {commit_hash[:12]} was not saved by CoralCallback: it has no Lightning training state to resume "
            "from (load its weights with CoralCallback.load_from_coral(model, commit_ref=...))"
        )
    loaded = load_checkpoint_commit(repo, commit_hash)
    state = loaded["state"]
    data = (state.data_state or {}).get("lightning") or {}
    if data.get("format") != FORMAT:
        raise CheckpointError(f"commit {commit_hash[:12]}: unknown Lightning state format {data.get('format')!r}")
    checkpoint = attach(data["skeleton"], data.get("tensors") or {})
    extra = checkpoint.pop("__state_dict_extra__", {})
    state_dict = {name: numpy_to_tensor(np.asarray(w.data)) for name, w in loaded["weights"].items()}
    state_dict.update(extra)
    checkpoint["state_dict"] = state_dict
    if state.optimizer_state is not None:
        checkpoint["optimizer_states"] = to_torch_tree(state.optimizer_state)
    if state.scheduler_state is not None:
        checkpoint["lr_schedulers"] = to_torch_tree(state.scheduler_state)
    for key, meta_key in HPARAMS_KEYS.items():
        if meta_key in commit.metadata:
            checkpoint[key] = commit.metadata[meta_key]
    loaders = (state.data_state or {}).get("loaders")
    checkpoint["coral"] = {"commit": loaded["commit_hash"], "random_state": state.random_state, "loaders": loaders}
    return checkpoint


def rng_for_rank(random_state: Any, rank: int) -> Any:
    """The RNG state one rank should restore: its own when every rank's was captured, else the only one."""
    if isinstance(random_state, Mapping) and PER_RANK in random_state:
        per_rank = random_state[PER_RANK]
        return per_rank[rank] if rank < len(per_rank) else per_rank[0]
    return random_state
