"""The CheckpointableIterator protocol: data pipelines that can report and restore their position."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidArgumentError


@runtime_checkable
class CheckpointableIterator(Protocol):
    """Anything with ``get_state() -> dict`` and ``set_state(dict)``; a resumed pipeline yields the same next batch."""

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


def _one(source: Any) -> dict[str, Any]:
    # plugins first: framework objects such as torch.Generator have get_state/set_state with other meanings
    from ..plugins import hook

    state = hook().coral_get_data_state(source=source)
    if state is None and isinstance(source, CheckpointableIterator):
        state = source.get_state()
    if state is None:
        raise InvalidArgumentError("data_state", type(source).__name__, "has no get_state() and no plugin captures it")
    return {"state": state}


def capture_data_state(data_state: Any) -> Any:
    """Turn ``data_state`` (a source, a dict of sources, or a plain dict) into plain state."""
    if data_state is None:
        return None
    if isinstance(data_state, Mapping):
        if any(isinstance(v, CheckpointableIterator) or not _plain(v) for v in data_state.values()):
            return {"__sources__": {str(k): _one(v)["state"] for k, v in data_state.items()}}
        return dict(data_state)
    return {"__source__": _one(data_state)["state"]}


def _plain(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict, np.ndarray, np.generic))


def restore_data_state(sources: Any, state: Any) -> None:
    """Restore a captured state into the same source(s) it was captured from."""
    if state is None:
        return
    from ..plugins import hook

    def put(src: Any, st: Any) -> None:
        if hook().coral_set_data_state(source=src, state=st):
            return
        if isinstance(src, CheckpointableIterator):
            src.set_state(st)
        else:
            raise InvalidArgumentError(
                "data source", type(src).__name__, "has no set_state() and no plugin restores it"
            )

    if isinstance(state, Mapping) and "__source__" in state:
        put(sources, state["__source__"])
    elif isinstance(state, Mapping) and "__sources__" in state:
        if not isinstance(sources, Mapping):
            raise InvalidArgumentError(
                "sources", type(sources).__name__, "state has several named sources: pass a dict"
            )
        for k, st in state["__sources__"].items():
            if k in sources:
                put(sources[k], st)
    else:
        raise InvalidArgumentError("state", type(state).__name__, "is not a captured data state")
