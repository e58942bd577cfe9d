"""Writing checkpoints: the commit itself, free-space checks, and the background
thread that async saves run in (one in flight per manager; its error surfaces at the next save or wait).

Shared by CheckpointManager and coral-jax's CoralCheckpointManager.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours (see below)
import logging
import shutil
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.weight_tensor import WeightTensor
from ..errors import CheckpointError, InsufficientSpaceError
from ..version_control.repository import Repository
from .config_file import parse_size
from .state import TrainingState

log = logging.getLogger(__name__)
_live_savers: weakref.WeakSet[BackgroundSaver] = weakref.WeakSet()


def _wait_all_at_exit() -> None:
    for saver in list(_live_savers):
        try:
            saver.wait()
        except Exception as exc:  # pragma: no cover - reported, the process is ending anyway
            log.error("a pending Coral checkpoint failed at exit: %s", exc)


# A save into an S3 repository needs thread pools, which refuse new work once concurrent.futures' exit hook
# has run; threading's exit hooks run before it (in reverse order of registration) and before atexit's.
getattr(threading, "_register_atexit", atexit.register)(_wait_all_at_exit)


class BackgroundSaver:
    """Runs one save at a time off the caller's thread; ``wait()`` joins it and raises what it raised.

    Pending saves are finished at interpreter exit (the thread is not a daemon either).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        _live_savers.add(self)

    def start(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[], None] | None = None) -> None:
        """Wait for the previous save, then run ``fn(*args)`` in a new thread."""
        self.wait()

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # surfaced at the next save or wait()
                log.error("async checkpoint (%s) failed: %s", self.name, exc)
                self._error = exc
            finally:
                if on_done is not None:
                    on_done()

        self._thread = threading.Thread(target=run, daemon=False, name=f"coral-save-{self.name}")
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a background save is still running."""
        t = self._thread
        return t is not None and t.is_alive()

    def raise_pending(self) -> None:
        """Raise CheckpointError for a background save that failed (once)."""
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"an earlier async checkpoint failed: {err}") from err

    def wait(self) -> None:
        """Block until the background save is written; raise if it failed."""
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
            self._thread = None
        self.raise_pending()


def host_copy(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """A private host-memory copy of each tensor (WeightTensors keep their metadata): what an async save writes."""
    out: dict[str, Any] = {}
    for name, value in arrays.items():
        if isinstance(value, WeightTensor):
            out[name] = WeightTensor(np.array(value.data, copy=True), value.metadata)
        else:
            out[name] = np.array(value, copy=True)
    return out


def check_free_space(repository: Repository, min_free_space: int | str | None, size: int) -> None:
    """Refuse (before writing anything) a save of ``size`` bytes that would leave less than ``min_free_space``."""
    need = parse_size("min_free_space", min_free_space)
    if need is None or repository.path is None:
        return
    free = shutil.disk_usage(repository.path).free
    if free - size < need:
        raise InsufficientSpaceError(
            f"min_free_space={need}: saving ~{size} bytes would leave {free - size} bytes free on "
            f"{repository.path}; nothing was written"
        )


def checkpoint_metadata(
    state: TrainingState,
    experiment_name: str,
    model_name: str | None,
    weight_names: list[str],
    skeletons: dict[str, Any],
    is_best: bool,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The commit metadata of a checkpoint: the JSON-safe TrainingState, the state skeletons and ``extra``."""
    info = state.copy_without_state()
    info["model_name"] = info.get("model_name") or model_name
    info["experiment_name"] = experiment_name
    metadata = {
        "coral_checkpoint": {
            "experiment": experiment_name,
            "model_name": model_name,
            "is_best": is_best,
            "weights": sorted(weight_names),
            "training_state": info,
            "state_skeletons": skeletons,
        },
        "epoch": state.epoch,
        "global_step": state.global_step,
        "loss": state.loss,
        "metrics": dict(state.metrics),
    }
    metadata.update(extra or {})
    return metadata


def commit_message(template: str, state: TrainingState, experiment_name: str) -> str:
    """``template`` filled from the state's fields and metrics; a broken template still gives a message."""
    fields = state.copy_without_state()
    fields.update({"step": state.global_step, "experiment": experiment_name})
    fields.update(state.metrics)
    try:
        return template.format(**fields)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        return f"Checkpoint at epoch {state.epoch}, step {state.global_step} (template error: {exc})"
