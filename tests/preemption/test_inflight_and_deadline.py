"""The preemption save waits for an async save in flight, lands at exactly the step the signal was seen, and
a wait that misses ``preemption_deadline`` is reported (real signals sent to this process, no mocks)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from coral import Repository  # noqa: E402
from coral.integrations.pytorch import Checkpointer  # noqa: E402
from coral.training import CheckpointConfig  # noqa: E402
from coral.training.preemption import wait_within  # noqa: E402


@pytest.fixture
def restore_usr1():
    before = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_async_save_in_flight_finishes_then_a_synchronous_marked_save_at_that_step(tmp_path: Path,
                                                                                   restore_usr1) -> None:
    model = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    cfg = CheckpointConfig(save_every_n_steps=3, async_save=True, preemption_signals=("SIGUSR1",))
    ckpt = Checkpointer(model, tmp_path / "r", "inflight", optimizer=opt, config=cfg)
    try:
        stopped = None
        for step in range(1, 20):
            model(torch.randn(4, 256)).pow(2).mean().backward()
            opt.step()
            ckpt.log(0, step, loss=float(step))
            if ckpt.should_stop:
                stopped = step
                break
            if step == 3:  # step 3's async save was just handed to the background writer: it is in flight
                os.kill(os.getpid(), signal.SIGUSR1)
        assert stopped == 4
        repo = Repository(tmp_path / "r")
        log = list(repo.log())  # newest first
        assert [c.metadata["global_step"] for c in log] == [4, 3]  # the async one was written, then the marked one
        assert log[0].metadata["preempted"] == {"signal": "SIGUSR1", "step": 4} and "preempted" not in log[1].metadata
        with pytest.raises(SystemExit) as info:
            ckpt.exit_if_preempted()
        assert info.value.code == 128 + signal.SIGUSR1
    finally:
        ckpt.close(status="failed")


def test_a_wait_past_the_deadline_returns_false_and_logs_what_did_not_make_it(caplog: pytest.LogCaptureFixture) -> None:
    never = threading.Event()
    with caplog.at_level(logging.ERROR, logger="coral.training.preemption"):
        assert not wait_within(never.wait, 0.05, "the push of abc123")
    assert "the push of abc123" in caplog.text and "preemption_deadline=0.05" in caplog.text
    never.set()

    def failing() -> None:
        raise OSError("remote unreachable")

    with caplog.at_level(logging.ERROR, logger="coral.training.preemption"):
        assert not wait_within(failing, 5.0)
    assert "remote unreachable" in caplog.text
