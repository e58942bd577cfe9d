"""The preemption handler and options with real signals sent to this process (no mocks)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from coral import Repository
from coral.errors import ConfigError, ExitDeadlineError
from coral.training import CheckpointConfig, CheckpointManager, PreemptionGuard, PreemptionHandler, TrainingState
from coral.version_control.background import clear_exit_wait_limit, limit_exit_wait


@pytest.fixture
def restore_usr1():
    before = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_handler_sets_a_flag_chains_to_the_previous_handler_and_uninstall_restores_it(restore_usr1) -> None:
    seen: list[int] = []

    def user(signum: int, frame: object) -> None:
        seen.append(signum)

    signal.signal(signal.SIGUSR1, user)
    h = PreemptionHandler(("SIGUSR1",))
    assert h.install() and not h.requested
    os.kill(os.getpid(), signal.SIGUSR1)
    assert h.requested and h.signal_name == "SIGUSR1" and h.exit_code() == 128 + signal.SIGUSR1
    assert seen == [signal.SIGUSR1]  # the user's handler installed before still ran
    h.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is user


def test_install_outside_the_main_thread_does_nothing(restore_usr1) -> None:
    h = PreemptionHandler(("SIGUSR1",))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(h.install()))
    t.start()
    t.join()
    assert result == [False] and not h.installed


@pytest.mark.parametrize(
    ("field", "value"),
    [("preemption_signals", ("SIGKILL",)), ("preemption_signals", ()), ("preemption_signals", (15,)),
     ("preemption_deadline", 0), ("preemption_deadline", float("inf")), ("save_on_preemption", "yes")],
)
def test_bad_preemption_options_fail_with_one_line_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CheckpointConfig(**{field: value})


def test_defaults_and_env() -> None:
    cfg = CheckpointConfig()
    assert cfg.save_on_preemption and cfg.preemption_signals == ("SIGTERM",) and cfg.preemption_deadline == 90.0
    env = {"CORAL_PREEMPTION_SIGNALS": "SIGTERM,sigusr1", "CORAL_PREEMPTION_DEADLINE": "30"}
    cfg = CheckpointConfig.from_env(env)
    assert cfg.preemption_signals == ("SIGTERM", "SIGUSR1") and cfg.preemption_deadline == 30


def test_guard_saves_once_and_marks_the_commit(tmp_path: Path, restore_usr1) -> None:
    repo = Repository(tmp_path / "r", init=True)
    cfg = CheckpointConfig(save_every_n_steps=1000, preemption_signals=("SIGUSR1",), async_save=True)
    manager = CheckpointManager(repo, cfg, experiment_name="unit")
    guard = PreemptionGuard.from_config(cfg)
    guard.install()
    try:
        assert not guard.check()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert guard.check() and not guard.check()  # due once
        import numpy as np

        state = TrainingState(epoch=0, global_step=7)
        commit = manager.save_checkpoint({"w": np.arange(4.0)}, state, force=True, metadata=guard.metadata(7),
                                         synchronous=True)
        assert commit is not None  # synchronous although async_save is on
        assert guard.finish(manager.wait, commit) and guard.should_stop
        assert repo.get_commit(commit).metadata["preempted"] == {"signal": "SIGUSR1", "step": 7}
        with pytest.raises(SystemExit) as info:
            guard.exit_if_preempted()
        assert info.value.code == 128 + signal.SIGUSR1
    finally:
        guard.uninstall()


def test_coral_log_marks_the_preempted_commit(tmp_path: Path) -> None:
    import subprocess
    import sys

    import numpy as np

    repo = Repository(tmp_path / "r", init=True)
    manager = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="unit")
    manager.save_checkpoint({"w": np.zeros(2)}, TrainingState(epoch=0, global_step=1), force=True)
    manager.save_checkpoint({"w": np.ones(2)}, TrainingState(epoch=0, global_step=2), force=True,
                            metadata={"preempted": {"signal": "SIGTERM", "step": 2}})
    coral = Path(sys.executable).parent / "coral"
    out = subprocess.run([str(coral), "log"], cwd=tmp_path / "r", capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert "[preempted]" in lines[0] and "[preempted]" not in lines[1]


def test_past_a_preemption_deadline_a_push_copies_no_chunk_and_a_later_push_completes(tmp_path: Path) -> None:
    """Queued chunk copies are dropped once the deadline passed (the exit must not wait on them); the remote
    keeps its old branch, and the same push run again (no deadline) sends everything."""
    Repository(tmp_path / "remote", init=True).close()
    with Repository(tmp_path / "local", init=True) as local:
        local.add_remote("origin", tmp_path / "remote")
        local.stage_weights({"w": np.arange(50_000, dtype=np.float32)})
        commit = local.commit("c")
        limit_exit_wait(0)
        with pytest.raises(ExitDeadlineError, match="preemption deadline passed"):
            local.push()
        clear_exit_wait_limit()
        with Repository(tmp_path / "remote") as remote:
            assert list(remote.log()) == []
        local.push()
    with Repository(tmp_path / "remote") as remote:
        assert [c.hash for c in remote.log()] == [commit]
