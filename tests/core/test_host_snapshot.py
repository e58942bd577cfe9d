"""HostSnapshot: the host copy an async save writes from, in buffers reused from save to save."""

from __future__ import annotations

import numpy as np
import pytest
from coral.core.weight_tensor import WeightTensor
from coral.errors import CheckpointError, SnapshotChangedError
from coral.training import HostSnapshot


def test_copy_is_private_exact_and_reuses_its_buffers():
    snap = HostSnapshot()
    live = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": WeightTensor(np.array([np.nan, -0.0]), name="b")}
    first = snap.copy(live)
    live["a"][:] = 7  # the live tensor changes after the copy: the copy does not
    assert first["a"].tobytes() == np.arange(12, dtype=np.float32).reshape(3, 4).tobytes()
    assert first["b"].data.tobytes() == np.array([np.nan, -0.0]).tobytes() and first["b"].name == "b"
    second = snap.copy(live)
    assert second["a"] is first["a"]  # the same memory: no fresh allocation per save
    assert second["a"].tobytes() == live["a"].tobytes()
    third = snap.copy({"a": np.zeros(5, np.int8)})  # a shape or dtype change gets a new buffer
    assert third["a"] is not first["a"] and third["a"].dtype == np.int8
    snap.retain_only({"a"})
    assert set(snap.copy({"a": np.zeros(5, np.int8)})) == {"a"}


def test_guard_refuses_a_tensor_changed_since_save():
    snap = HostSnapshot()
    with pytest.raises(SnapshotChangedError, match=r"'w'.*snapshot='copy'") as err:
        snap.copy({"ok": np.ones(3), "w": np.ones(3)}, guard=lambda name: "written" if name == "w" else None)
    assert isinstance(err.value, CheckpointError)


def test_wait_copied_follows_begin_and_end():
    snap = HostSnapshot()
    assert snap.copied and snap.wait_copied(0)
    snap.begin()
    assert not snap.copied and not snap.wait_copied(0.01)
    snap.end()
    assert snap.wait_copied(0)
