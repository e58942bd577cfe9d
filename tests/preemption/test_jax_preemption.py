"""coral_jax.CoralCheckpointManager.reached_preemption with a real signal sent to this process (no mocks)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

jnp = pytest.importorskip("jax.numpy")
from coral import Repository  # noqa: E402
from coral_jax import CoralCheckpointManager  # noqa: E402


def test_reached_preemption_then_save_is_synchronous_marked_and_exits_128_plus_signum(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    mgr = CoralCheckpointManager(tmp_path / "r", save_interval_steps=100, enable_async=True,
                                 preemption_signals=("SIGUSR1",))
    try:
        stopped = None
        params = {"w": jnp.zeros((3,), jnp.float32)}
        for step in range(1, 50):
            params = {"w": params["w"] + 1}
            if step == 5:
                os.kill(os.getpid(), signal.SIGUSR1)
            mgr.save(step, params)  # the policy: step 1 only (save_interval_steps=100)
            if mgr.reached_preemption(step):
                assert mgr.save(step, params, force=True)
                stopped = step
                break
        assert stopped in (5, 6) and mgr.should_stop
        assert mgr.all_steps() == [1, stopped]
        meta = Repository(tmp_path / "r").get_commit(mgr.commit_hash(stopped)).metadata
        assert meta["preempted"] == {"signal": "SIGUSR1", "step": stopped}
        assert float(mgr.restore()["w"][0]) == stopped
        with pytest.raises(SystemExit) as info:
            mgr.exit_if_preempted()
        assert info.value.code == 128 + signal.SIGUSR1
    finally:
        mgr.close()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_push_that_hangs_past_the_deadline_does_not_hold_close(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote's S3 server is frozen, so the push never ends: the preemption save is local and complete,
    and close() (then the exit) returns at the deadline instead of waiting for the push."""
    from preempt_helpers import frozen_s3_remote

    before = signal.getsignal(signal.SIGUSR1)
    with frozen_s3_remote(tmp_path / "r", monkeypatch):
        mgr = CoralCheckpointManager(tmp_path / "r", save_interval_steps=100, push_to="origin",
                                     preemption_signals=("SIGUSR1",), preemption_deadline=1)
        try:
            params = {"w": jnp.ones((3,), jnp.float32)}
            os.kill(os.getpid(), signal.SIGUSR1)
            assert mgr.reached_preemption(2)
            assert mgr.save(2, params, force=True)
            assert mgr.should_stop
        finally:
            mgr.close()  # would block on the frozen server for minutes without the deadline
        assert Repository(tmp_path / "r").get_commit(mgr.commit_hash(2)).metadata["preempted"]["step"] == 2
    assert signal.getsignal(signal.SIGUSR1) == before
