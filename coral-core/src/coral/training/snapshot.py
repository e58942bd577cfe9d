"""Host snapshots of a save's tensors: the copy an async save writes from, made in reusable buffers.

A ``HostSnapshot`` keeps one set of host buffers per manager (at most one save is in flight), so a save
after the first copies into memory that is already mapped: no fresh allocation, no page faults, and the
memory an async save holds stays at one copy of the state. ``copy`` runs in the caller's thread (the
plain copying snapshot) or in the background (the lazy snapshot); ``copied`` is set when every byte is out
of the live tensors, which is what an integration's gate (a PyTorch optimizer step pre-hook) waits for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.weight_tensor import WeightTensor
from ..errors import SnapshotChangedError

Guard = Callable[[str], str | None]
"""``guard(name)`` -> None when the live tensor ``name`` is unchanged since ``save`` was called, else why."""


class HostSnapshot:
    """Reusable host buffers for one manager's saves, and the event that says the current copy is done."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._copied = threading.Event()
        self._copied.set()

    @property
    def copied(self) -> bool:
        """True when no copy is pending (the live tensors may change)."""
        return self._copied.is_set()

    def begin(self) -> None:
        """Mark a copy as pending: ``wait_copied`` blocks from now until ``end``."""
        self._copied.clear()

    def end(self) -> None:
        """Release the waiters (the copy finished, or failed and will never be made)."""
        self._copied.set()

    def wait_copied(self, timeout: float | None = None) -> bool:
        """Block until the pending copy is done; True unless ``timeout`` passed first."""
        return self._copied.wait(timeout)

    def copy(self, items: Mapping[str, Any], guard: Guard | None = None) -> dict[str, Any]:
        """A private copy of every array (WeightTensors keep their metadata) in this snapshot's buffers.

        With ``guard`` (the lazy snapshot), each tensor is checked after its copy: one that changed since the
        save was called raises SnapshotChangedError, so a commit never mixes two states."""
        out: dict[str, Any] = {}
        for name, value in items.items():
            src = value.data if isinstance(value, WeightTensor) else np.asarray(value)
            buf = self._buffer(name, src)
            np.copyto(buf, src, casting="no")
            if guard is not None:
                why = guard(name)
                if why is not None:
                    raise SnapshotChangedError(
                        f"lazy snapshot: tensor {name!r} changed after save() was called ({why}); the state is "
                        "written only by optimizer.step() in a lazy snapshot: pass snapshot='copy' when code "
                        "outside step() writes to parameters or optimizer state"
                    )
            out[name] = WeightTensor(buf, value.metadata) if isinstance(value, WeightTensor) else buf
        return out

    def _buffer(self, name: str, src: np.ndarray) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
            buf = self._buffers[name] = np.empty_like(src, order="C")
        return buf

    def retain_only(self, names: set[str]) -> None:
        """Free the buffers of tensors the last save did not hold (a model that shrank keeps no stale copy)."""
        for name in [n for n in self._buffers if n not in names]:
            del self._buffers[name]

    def clear(self) -> None:
        """Free every buffer (the memory comes back; the next save allocates again)."""
        self._buffers.clear()
