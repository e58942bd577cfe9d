"""One-off ``save(model, repo, message)`` and ``load(model, repo, commit)`` without a training loop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from coral import Repository
from coral.training.manager import STATE_PREFIXES

from . import _state
from . import distributed as _dist
from .integration import PyTorchIntegration


def save(
    model: torch.nn.Module,
    repo: Repository | str | os.PathLike[str],
    message: str = "Save model",
    *,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Commit the model's full ``state_dict`` on the current branch; returns ``{"commit_hash", "weights_saved"}``.

    ``repo`` is a Repository or a folder (created when missing); ``weights_saved`` counts the tensors.
    DDP/compile wrappers are seen through (names carry no ``module.``). In a process group, call it on
    every rank: rank 0 commits, the others wait at a barrier, and every rank returns the same hash.
    """
    _state.check_model(model)
    inner = _dist.unwrap(model)

    def commit() -> dict[str, Any]:
        repository = _state.open_repository(repo)
        weights = PyTorchIntegration.model_to_weights(inner, copy=False)  # staged (written) at once
        repository.stage_weights(weights)
        commit_hash = repository.commit(message, dict(metadata or {}) | {"model_class": type(inner).__name__})
        return {"commit_hash": commit_hash, "weights_saved": len(weights)}

    return _dist.run_on_rank0(commit, "save")


def load(
    model: torch.nn.Module,
    repo: Repository | str | os.PathLike[str],
    commit: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a commit's weights (default: HEAD; a branch, tag or hash) into ``model`` in place.

    Returns ``{"loaded": [names], "matched": bool, "missing": [names], "unexpected": [names]}``, where
    ``matched`` says the commit and the model hold exactly the same tensor names. Optimizer/RNG tensors of a
    training checkpoint are not model weights and are left out. Wrapper prefixes (``module.``, ``_orig_mod.``)
    are accepted on either side. ``strict=True`` raises on any missing or
    unexpected name; a shape mismatch always raises, naming the tensor and both shapes. Nothing is unpickled.
    """
    _state.check_model(model)
    repository = repo if isinstance(repo, Repository) else Repository(repo)
    reserved = set(STATE_PREFIXES.values())
    weights = {
        name: w for name, w in repository.get_weights(commit).items() if name.split("/", 1)[0] not in reserved
    }
    # either spelling loads: a DDP/compiled model or a plain one, a commit with or without ``module.`` names
    weights = _dist.strip_wrapper_prefixes(weights)
    result = PyTorchIntegration.weights_to_model(weights, _dist.unwrap(model), strict=strict)
    result["matched"] = not result["missing"] and not result["unexpected"]
    return {k: result[k] for k in ("loaded", "matched", "missing", "unexpected")}
