"""CheckpointManager(push_to=...): pushes run in the background after each save, never in the saving thread;
``wait()`` waits for them; a push that keeps failing surfaces like a failed async save."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from coral import Repository
from coral.errors import CheckpointError, ConfigError, UnknownRemoteError
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"layer.weight": rng.standard_normal((64, 32)).astype(np.float32), "layer.bias": np.zeros(64, np.float32)}


@pytest.fixture
def trainer(tmp_path):
    Repository(tmp_path / "remote", init=True).close()
    repo = Repository(tmp_path / "local", init=True)
    repo.add_remote("origin", tmp_path / "remote")
    yield repo
    repo.close()


@pytest.mark.parametrize("async_save", [False, True])
def test_each_save_is_pushed_and_wait_waits_for_it(tmp_path, trainer, async_save):
    cfg = CheckpointConfig(save_every_n_steps=1, push_to="origin", async_save=async_save)
    m = CheckpointManager(trainer, cfg, experiment_name="run")
    for step in range(1, 4):
        m.save_checkpoint(weights(step), TrainingState(epoch=0, global_step=step))
    m.wait()
    with Repository(tmp_path / "remote") as remote:
        assert remote.head_commit() == trainer.head_commit() == m.last_commit_hash
        assert remote.read_document("checkpoints/run")["history"][-1]["commit_hash"] == m.last_commit_hash
        assert remote.load_arrays()["layer.weight"].tobytes() == weights(3)["layer.weight"].tobytes()


def test_saving_never_waits_for_a_push(tmp_path, trainer):
    """While the remote is locked (a gc there holds its lock exclusively), pushes cannot finish; saves still do."""
    m = CheckpointManager(trainer, CheckpointConfig(save_every_n_steps=1, push_to="origin"), experiment_name="run")
    with Repository(tmp_path / "remote") as remote:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with remote.store.lock("gc", exclusive=True):
                held.set()
                release.wait()

        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        for step in range(1, 4):  # would hang here if a save waited for the blocked push
            assert m.save_checkpoint(weights(step), TrainingState(epoch=0, global_step=step)) is not None
        assert remote.head_commit() is None
        release.set()
        t.join()
        m.wait()
        assert remote.head_commit() == m.last_commit_hash


def test_a_failing_push_is_retried_then_raised_at_wait(tmp_path, trainer):
    m = CheckpointManager(trainer, CheckpointConfig(save_every_n_steps=1, push_to="origin"), experiment_name="run")
    shutil.rmtree(tmp_path / "remote")  # the remote went away
    m.save_checkpoint(weights(1), TrainingState(epoch=0, global_step=1))  # the save itself succeeds
    with pytest.raises(CheckpointError, match="background push to 'origin' failed"):
        m.wait()
    m.wait()  # reported once
    assert trainer.load_arrays()["layer.weight"].tobytes() == weights(1)["layer.weight"].tobytes()


def test_push_to_must_name_a_configured_remote(trainer):
    with pytest.raises(UnknownRemoteError, match="remote='elsewhere'"):
        CheckpointManager(trainer, CheckpointConfig(push_to="elsewhere"))
    with pytest.raises(ConfigError, match="push_to"):
        CheckpointConfig(push_to="")
    assert CheckpointConfig.from_env({"CORAL_PUSH_TO": "origin"}).push_to == "origin"
