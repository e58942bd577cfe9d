"""What CoralTrainer and Checkpointer share: building a TrainingState from live objects and restoring one.

The data state a checkpoint stores is ``{"epoch_complete": bool, "source": captured data source or None}``:
``epoch_complete`` tells a resume whether the saved epoch still has batches to run.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from copy import copy
from typing import Any

import numpy as np
import torch
from coral import Repository
from coral.errors import InvalidArgumentError
from coral.training import CheckpointManager, TrainingState, capture_data_state, restore_data_state

from . import distributed as _dist
from .data import as_data_source, is_mid_epoch
from .integration import PyTorchIntegration

log = logging.getLogger(__name__)


def open_repository(repo: Repository | str | os.PathLike[str]) -> Repository:
    """A Repository as given, or the one at a path (created when missing)."""
    if isinstance(repo, Repository):
        return repo
    if isinstance(repo, (str, os.PathLike)):
        return Repository(repo, init=True)
    raise InvalidArgumentError("repository", type(repo).__name__, "expected a coral Repository or a folder path")


def check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError("model", type(model).__name__, "expected a torch.nn.Module")
    return model


def check_optimizer(optimizer: Any) -> Any:
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidArgumentError("optimizer", type(optimizer).__name__, "expected a torch.optim.Optimizer")
    return optimizer


def check_scheduler(scheduler: Any) -> Any:
    if scheduler is not None and not (callable(getattr(scheduler, "state_dict", None)) and hasattr(scheduler, "step")):
        raise InvalidArgumentError("scheduler", type(scheduler).__name__, "expected a torch learning-rate scheduler")
    return scheduler


def number(name: str, value: Any) -> Any:
    """A metric as a python float (0-d tensors and numpy scalars included); other values pass through."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(name, tuple(value.shape), "a metric tensor must hold one value")
        return float(value.detach().cpu().item())
    if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1:
        return float(np.asarray(value).item())
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    return value


def learning_rate(optimizer: Any) -> float | None:
    if optimizer is None or not optimizer.param_groups:
        return None
    lr = optimizer.param_groups[0].get("lr")
    if isinstance(lr, torch.Tensor):
        lr = float(lr.item())
    return float(lr) if lr is not None else None


def build_state(
    manager: CheckpointManager,
    *,
    epoch: int,
    global_step: int,
    metrics: Mapping[str, Any],
    optimizer: Any,
    scheduler: Any,
    data: Any,
    epoch_complete: bool,
    with_tensors: bool,
) -> TrainingState:
    """The TrainingState for a checkpoint; optimizer/scheduler/data state only when ``with_tensors``."""
    metrics = dict(metrics)
    loss = metrics.pop("loss", None)
    cfg = manager.config
    state = TrainingState(
        epoch=epoch,
        global_step=global_step,
        learning_rate=learning_rate(optimizer),
        loss=float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None,
        metrics=metrics,
        model_name=manager.model_name,
        experiment_name=manager.experiment_name,
    )
    if with_tensors:
        if optimizer is not None and cfg.save_optimizer_state:
            state.optimizer_state = PyTorchIntegration.save_optimizer_state(optimizer, copy=False)
        if scheduler is not None and cfg.save_scheduler_state:
            state.scheduler_state = PyTorchIntegration.save_scheduler_state(scheduler)
        source = capture_data_state(as_data_source(data)) if data is not None else None
        state.data_state = {"epoch_complete": bool(epoch_complete) and not is_mid_epoch(data), "source": source}
    return state


def model_weights(model: torch.nn.Module, manager: CheckpointManager) -> dict[str, Any]:
    # the manager writes at once, or snapshots itself before an async write: no copy needed here
    # DDP/compile wrappers are seen through: names never carry ``module.`` or ``_orig_mod.``
    return PyTorchIntegration.model_to_weights(_dist.unwrap(model), copy=False)


def restore(
    checkpoint: Mapping[str, Any],
    model: torch.nn.Module,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
    data: Any = None,
    load_optimizer: bool = True,
    load_scheduler: bool = True,
    load_rng: bool = True,
    strict: bool = True,
) -> bool:
    """Load a checkpoint's weights, optimizer, scheduler, RNG and data position; returns ``epoch_complete``."""
    from coral.plugins import hook

    state: TrainingState = checkpoint["state"]
    weights = _dist.strip_wrapper_prefixes(checkpoint["weights"])
    PyTorchIntegration.weights_to_model(weights, _dist.unwrap(model), strict=strict)
    short = checkpoint["commit_hash"][:12]
    if optimizer is not None and load_optimizer:
        if state.optimizer_state is not None:
            PyTorchIntegration.load_optimizer_state(optimizer, state.optimizer_state)
        else:
            log.warning("checkpoint %s holds no optimizer state; the optimizer starts fresh", short)
    if scheduler is not None and load_scheduler:
        if state.scheduler_state is not None:
            PyTorchIntegration.load_scheduler_state(scheduler, state.scheduler_state)
        else:
            log.warning("checkpoint %s holds no scheduler state; the scheduler starts fresh", short)
    if load_rng and state.random_state:
        hook().coral_set_rng_state(state=state.random_state)
    saved = state.data_state if isinstance(state.data_state, Mapping) else {}
    if data is not None and saved.get("source") is not None:
        restore_data_state(as_data_source(data), saved["source"])
    elif data is not None:
        log.warning("checkpoint %s holds no data-order state; the data order is not restored", short)
    return bool(saved.get("epoch_complete", True))


@contextmanager
def policy_view(manager: CheckpointManager, *, steps: bool, epochs: bool) -> Iterator[None]:
    """Let the manager apply only the step rule (``steps``) or only the epoch and metric rules (``epochs``).

    A per-step check must not fire the every-N-epochs rule (``epoch % n == 0`` holds for a whole epoch), and
    an end-of-epoch check must not repeat a step save; the manager keeps its own bookkeeping (early stopping,
    the measured cost of ``"auto"`` saves) either way. A step save thus never counts as "best".
    """
    full = manager.config
    view = copy(full)
    if not steps:
        view.save_every_n_steps = None
    if not epochs:
        view.save_every_n_epochs = None
        view.save_on_best_metric = None
        view.early_stopping_patience = None
    # No lock: save_checkpoint waits for an in-flight async write, which needs the manager's lock. A write in
    # flight may read the view; it only reads fields the view shares (auto_commit, keep_*, tag_best_checkpoints).
    manager.config = view
    try:
        yield
    finally:
        manager.config = full


def guarded(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run a notification (callback, tracker call) after a durable save: log its failure, never raise it."""
    try:
        fn(*args, **kwargs)
    except Exception:
        log.exception("%s failed after a checkpoint save", getattr(fn, "__qualname__", fn))


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
