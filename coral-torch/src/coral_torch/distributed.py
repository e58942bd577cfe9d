"""Rank awareness: in a torch.distributed process group, global rank 0 commits and every rank gets its hash.

A save point is ``run_on_rank0(fn)``: every rank meets at a barrier (with a timeout and an error naming the
ranks that did not arrive), rank 0 runs ``fn`` (the commit), and its result -- or its error -- is broadcast,
so every rank returns, logs and can load the same commit. Coordination goes through a gloo group (CPU
objects), also when training itself runs on NCCL. Wrapper prefixes (DDP/FSDP ``module.``, torch.compile's
``_orig_mod.``) are seen through on save and accepted on load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from coral.errors import CoralError, InvalidArgumentError, RankTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a save point waits for every rank to arrive (override: ``CORAL_BARRIER_TIMEOUT`` seconds).
DEFAULT_BARRIER_TIMEOUT = timedelta(seconds=float(os.environ.get("CORAL_BARRIER_TIMEOUT", "600")))
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_groups: dict[int, Any] = {}


def is_distributed() -> bool:
    """True in an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def coordination_group() -> Any:
    """A gloo group over all ranks for barriers and small objects (the default group when it is gloo).

    Creating it is collective: every rank must reach the first save point (they all do: saves are collective).
    """
    default = dist.group.WORLD
    key = id(default)
    if key not in _groups:
        if dist.get_backend() == "gloo":
            _groups[key] = default
        else:
            _groups[key] = dist.new_group(backend="gloo")
    return _groups[key]


def barrier(what: str, timeout: timedelta | float | None = None) -> None:
    """Wait until every rank reached save point ``what``; RankTimeoutError names the ranks missing."""
    if not is_distributed():
        return
    if timeout is None:
        timeout = DEFAULT_BARRIER_TIMEOUT
    elif not isinstance(timeout, timedelta):
        timeout = timedelta(seconds=float(timeout))
    try:
        dist.monitored_barrier(group=coordination_group(), timeout=timeout, wait_all_ranks=True)
    except RuntimeError as exc:
        raise RankTimeoutError(
            f"rank {rank()}: not every rank reached the save point {what!r} within {timeout.total_seconds():g}s "
            f"(a rank crashed, hangs, or skipped the save: saves must be called on every rank): {exc}"
        ) from exc


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (a small picklable object, sent between live ranks, never stored)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=coordination_group())
    return box[0]


def run_on_rank0(fn: Callable[[], T], what: str, timeout: timedelta | float | None = None) -> T:
    """Every rank meets at a barrier, rank 0 runs ``fn``; every rank returns rank 0's result (or raises its error)."""
    if not is_distributed():
        return fn()
    barrier(what, timeout)
    result: Any = None
    error: str | None = None
    if rank() == 0:
        try:
            result = fn()
        except BaseException as exc:
            broadcast(("error", f"{type(exc).__name__}: {exc}"))
            raise
        broadcast(("ok", result))
        return result
    status, payload = broadcast(("?", None))
    if status == "error":
        error = payload
        raise CoralError(f"rank 0 failed at save point {what!r}: {error}")
    return payload


def strip_wrapper_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state_dict with DDP/FSDP ``module.`` and torch.compile ``_orig_mod.`` prefixes removed from every name.

    A prefix is removed only when every name carries it (a model with a real submodule called ``module``
    keeps its names)."""
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers, however nested."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__ in (
            "DataParallel", "DistributedDataParallel", "FullyShardedDataParallel"
        ):
            inner = getattr(model, "module", None)
            if isinstance(inner, torch.nn.Module):
                model = inner
                continue
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, torch.nn.Module):
            model = inner
            continue
        break
    return model


def check_distributed_mode(value: Any) -> str | None:
    """``distributed=`` of Checkpointer: None (rank 0 commits full state_dicts) or ``"dcp"`` (sharded saves)."""
    if value not in (None, "dcp"):
        raise InvalidArgumentError(
            "distributed", value, "must be None (replicated models: DDP) or 'dcp' (sharded: FSDP2)"
        )
    return value
