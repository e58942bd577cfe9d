"""Data order for exact resume: a DataLoader's shuffling generators, and the position inside an epoch.

A checkpoint taken between epochs needs the generator that shuffles (``DataLoader(..., generator=g)``);
one taken mid-epoch also needs how many batches were consumed: :class:`ResumableLoader` records both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from coral.errors import InvalidArgumentError
from coral.hookspecs import hookimpl
from torch.utils.data import DataLoader

from .convert import numpy_to_tensor, tensor_to_numpy

log = logging.getLogger(__name__)


def loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` objects a DataLoader draws its order from, by role (``loader``, ``sampler``)."""
    found: dict[str, torch.Generator] = {}
    candidates = [
        ("loader", getattr(loader, "generator", None)),
        ("sampler", getattr(getattr(loader, "sampler", None), "generator", None)),
        ("batch_sampler", getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None)),
    ]
    for role, g in candidates:
        if isinstance(g, torch.Generator) and not any(g is seen for seen in found.values()):
            found[role] = g
    return found


def _gen_state(g: torch.Generator) -> np.ndarray:
    return tensor_to_numpy(g.get_state()).copy()


def _set_gen(g: torch.Generator, state: Any) -> None:
    g.set_state(numpy_to_tensor(np.asarray(state, dtype=np.uint8)))


def _generator_states(loader: Any) -> dict[str, np.ndarray]:
    return {role: _gen_state(g) for role, g in loader_generators(loader).items()}


def _restore_generators(loader: Any, states: Mapping[str, Any] | None) -> None:
    gens = loader_generators(loader)
    for role, st in (states or {}).items():
        if role in gens:
            _set_gen(gens[role], st)
        else:
            log.warning("checkpoint holds a %r generator state but this DataLoader has none; ignored", role)


def _global_rng() -> dict[str, Any]:
    from coral.plugins import hook

    merged: dict[str, Any] = {}
    for part in hook().coral_get_rng_state():
        merged.update(part or {})
    return merged


def _set_global_rng(state: Mapping[str, Any]) -> None:
    from coral.plugins import hook

    hook().coral_set_rng_state(state=dict(state))


class GeneratorSource:
    """A ``torch.Generator`` seen through the CheckpointableIterator protocol (``get_state``/``set_state`` dicts)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def get_state(self) -> dict[str, Any]:
        return {"generator": _gen_state(self.generator)}

    def set_state(self, state: dict[str, Any]) -> None:
        _set_gen(self.generator, state["generator"])


class ResumableLoader:
    """Wrap a DataLoader so a checkpoint records the position inside the epoch; resuming replays to it.

    Iterate it like the loader. ``get_state()`` holds the batches handed out this epoch and the RNG states
    from when the epoch's iterator was made; after ``set_state()`` the next iteration rebuilds the same
    order, re-reads (and drops) the consumed batches, then puts every global RNG back where the checkpoint
    left it, so the next batch and everything after it match the uninterrupted run.
    """

    def __init__(self, loader: DataLoader) -> None:
        if not isinstance(loader, DataLoader):
            raise InvalidArgumentError("loader", type(loader).__name__, "expected a torch.utils.data.DataLoader")
        if getattr(loader, "persistent_workers", False):
            raise InvalidArgumentError(
                "loader", "persistent_workers=True", "worker RNG carries over between epochs and cannot be restored"
            )
        self.loader = loader
        self._batches = 0
        self._epoch_start: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    @property
    def batches_seen(self) -> int:
        """Batches handed out so far in the current epoch (0 between epochs)."""
        return int(self._pending["batches"]) if self._pending else self._batches

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        restore_after = None
        if pending:
            restore_after = _global_rng()
            start = pending["epoch_start"]
            _restore_generators(self.loader, start.get("generators"))
            torch.set_rng_state(numpy_to_tensor(np.asarray(start["torch"], dtype=np.uint8)))
        self._epoch_start = {
            "generators": _generator_states(self.loader),
            "torch": tensor_to_numpy(torch.get_rng_state()).copy(),
        }
        self._batches = 0
        it = iter(self.loader)
        if pending:
            for _ in range(int(pending["batches"])):
                try:
                    next(it)
                except StopIteration:
                    log.warning("resumed epoch has fewer batches than the checkpoint consumed (%s)", pending["batches"])
                    break
                self._batches += 1
            assert restore_after is not None
            _set_global_rng(restore_after)
        for batch in it:
            self._batches += 1
            yield batch
        self._batches = 0
        self._epoch_start = None

    def get_state(self) -> dict[str, Any]:
        """``{"batches", "generators", "epoch_start"}``: plain values and numpy arrays."""
        if self._pending:
            return dict(self._pending)
        mid = self._batches > 0 and self._epoch_start is not None
        return {
            "batches": self._batches if mid else 0,
            "generators": _generator_states(self.loader),
            "epoch_start": self._epoch_start if mid else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state`; a mid-epoch state is replayed at the next iteration."""
        if not isinstance(state, Mapping) or "batches" not in state:
            raise InvalidArgumentError("state", type(state).__name__, "is not a ResumableLoader state")
        if int(state["batches"]) > 0:
            if not state.get("epoch_start"):
                raise InvalidArgumentError("state", state.get("batches"), "a mid-epoch state needs its epoch_start")
            self._pending = dict(state)
        else:
            self._pending = None
            _restore_generators(self.loader, state.get("generators"))
        self._batches = 0
        self._epoch_start = None


def as_data_source(source: Any) -> Any:
    """What Coral's data-state capture should see for ``source`` (a Generator gets a dict-based adapter)."""
    if isinstance(source, torch.Generator):
        return GeneratorSource(source)
    if isinstance(source, Mapping):
        return {k: as_data_source(v) for k, v in source.items()}
    return source


def is_mid_epoch(source: Any) -> bool:
    """True when ``source`` (or one of several) is a ResumableLoader inside an epoch."""
    if isinstance(source, ResumableLoader):
        return source.batches_seen > 0
    if isinstance(source, Mapping):
        return any(is_mid_epoch(v) for v in source.values())
    return False


@hookimpl
def coral_get_data_state(source: Any) -> dict[str, Any] | None:
    """DataLoaders (their shuffling generators) and bare ``torch.Generator`` objects."""
    if isinstance(source, torch.Generator):
        return {"generator": _gen_state(source)}
    if isinstance(source, DataLoader):
        return {"generators": _generator_states(source)}
    return None


@hookimpl
def coral_set_data_state(source: Any, state: dict[str, Any]) -> bool | None:
    if isinstance(source, torch.Generator) and "generator" in state:
        _set_gen(source, state["generator"])
        return True
    if isinstance(source, DataLoader) and "generators" in state:
        _restore_generators(source, state["generators"])
        return True
    return None


__all__ = ["GeneratorSource", "ResumableLoader", "as_data_source", "is_mid_epoch", "loader_generators"]
