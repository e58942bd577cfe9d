"""The shuffling generators of a Trainer's training DataLoaders: captured in a checkpoint, restored on resume.

A ``DataLoader(..., generator=g)`` draws each epoch's order from ``g``, not from the global RNG, so exact resume
needs ``g``'s state too. Saved at an epoch end: the state the next epoch draws from. Saved mid-epoch: the state
the current epoch started from, so the resumed epoch sees the same order (as coral-torch's ResumableLoader does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from coral_torch.convert import numpy_to_tensor, tensor_to_numpy
from coral_torch.data import loader_generators

log = logging.getLogger(__name__)


def train_loaders(trainer: Any) -> list[Any]:
    """The training DataLoaders the Trainer iterates, flattened (a single loader, a list or a dict of them)."""
    combined = getattr(getattr(trainer, "fit_loop", None), "_combined_loader", None)
    flat = getattr(combined, "flattened", None)
    if flat is not None:
        return list(flat)
    loaders = getattr(trainer, "train_dataloader", None)
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def capture(trainer: Any) -> dict[str, dict[str, np.ndarray]]:
    """``{loader index: {role: generator state}}`` for every training loader that has its own generator."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, loader in enumerate(train_loaders(trainer)):
        gens = loader_generators(loader)
        if gens:
            out[str(i)] = {role: tensor_to_numpy(g.get_state()).copy() for role, g in gens.items()}
    return out


def restore(trainer: Any, states: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Put each captured generator state back into the same loader (by index and role); warn on a mismatch."""
    if not states:
        return
    loaders = train_loaders(trainer)
    for idx, roles in states.items():
        i = int(idx)
        gens = loader_generators(loaders[i]) if i < len(loaders) else {}
        for role, st in roles.items():
            if role not in gens:
                log.warning(
                    "the checkpoint holds the %r generator of training loader %d, which this run does not have: "
                    "data order after resume may differ", role, i,
                )
                continue
            value = st if isinstance(st, torch.Tensor) else numpy_to_tensor(np.asarray(st, dtype=np.uint8))
            gens[role].set_state(value.to(torch.uint8))
