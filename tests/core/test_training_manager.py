"""CheckpointManager: save policy, best tracking, retention with pruning, callbacks, restart, async, releases."""

from __future__ import annotations

import logging
import random
import threading

import numpy as np
import pytest
from coral import Repository
from coral.errors import (
    CheckpointError,
    InsufficientSpaceError,
    InvalidArgumentError,
    PrunedCommitError,
    RefExistsError,
)
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"layer.weight": rng.standard_normal((64, 32)).astype(np.float32), "layer.bias": np.zeros(64, np.float32)}


@pytest.fixture
def repo(tmp_path):
    return Repository(tmp_path / "repo", init=True)


def test_should_save_on_steps_epochs_and_metric(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=10), experiment_name="s")
    assert not m.should_save_checkpoint(TrainingState(epoch=1, global_step=5))
    assert m.should_save_checkpoint(TrainingState(epoch=1, global_step=20))
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=2), experiment_name="e")
    assert m.should_save_checkpoint(TrainingState(epoch=4, global_step=3))
    assert not m.should_save_checkpoint(TrainingState(epoch=3, global_step=3))
    m = CheckpointManager(repo, CheckpointConfig(save_on_best_metric="val_loss"), experiment_name="b")
    assert m.should_save_checkpoint(TrainingState(metrics={"val_loss": 1.0}))
    m.save_checkpoint(weights(0), TrainingState(metrics={"val_loss": 1.0}))
    assert not m.should_save_checkpoint(TrainingState(metrics={"val_loss": 1.5}))
    assert m.should_save_checkpoint(TrainingState(metrics={"val_loss": 0.5}))
    assert not m.should_save_checkpoint(TrainingState(metrics={"val_loss": float("nan")}))


def test_save_checkpoint_skips_when_policy_says_no_and_force_overrides(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=100), experiment_name="x")
    assert m.save_checkpoint(weights(0), TrainingState(global_step=1)) is None
    assert repo.log() == []
    h = m.save_checkpoint(weights(0), TrainingState(global_step=1), force=True)
    assert h and repo.log()[0].hash == h


def test_checkpoint_roundtrip_restores_weights_and_state_tensors(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), model_name="M", experiment_name="rt")
    moments = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    state = TrainingState(
        epoch=2, global_step=7, loss=0.25, metrics={"acc": 0.5},
        optimizer_state={"state": {0: {"exp_avg": moments, "step": 7}}, "param_groups": [{"lr": 0.1}]},
        scheduler_state={"last_epoch": 2}, data_state={"offset": 3},
    )
    w = weights(3)
    h = m.save_checkpoint(w, state)
    tree = repo.get_commit(h).tree
    assert "optim/state/0/exp_avg" in tree  # optimizer tensors live in the tree, not in JSON
    meta = {k: v for k, v in repo.get_commit(h).metadata.items() if k != "provenance"}  # environment: its own size
    assert len(repr(meta)) < 3000  # 2048 moments are not written as JSON numbers
    ck = m.load_checkpoint()
    assert ck["commit_hash"] == h
    assert set(ck["weights"]) == set(w)
    for k, v in w.items():
        assert ck["weights"][k].data.tobytes() == v.tobytes()
    st = ck["state"]
    assert st.optimizer_state["state"][0]["exp_avg"].tobytes() == moments.tobytes()
    assert st.optimizer_state["state"][0]["step"] == 7 and st.scheduler_state == {"last_epoch": 2}
    assert st.data_state == {"offset": 3} and st.random_state is not None
    assert (st.epoch, st.global_step, st.loss, st.metrics, st.model_name) == (2, 7, 0.25, {"acc": 0.5}, "M")


def test_rng_state_is_captured_and_restorable(repo):
    from coral.plugins import hook

    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="rng")
    random.seed(5)
    np.random.seed(6)
    m.save_checkpoint(weights(0), TrainingState(global_step=1))
    expected = (random.random(), np.random.rand())
    random.seed(99)
    np.random.seed(99)
    hook().coral_set_rng_state(state=m.load_checkpoint()["state"].random_state)
    assert (random.random(), np.random.rand()) == expected


def test_best_tracking_tag_and_load_best(repo):
    cfg = CheckpointConfig(save_on_best_metric="acc", minimize_metric=False, save_every_n_steps=1)
    m = CheckpointManager(repo, cfg, experiment_name="best")
    hashes = [m.save_checkpoint(weights(i), TrainingState(global_step=i + 1, metrics={"acc": a}))
              for i, a in enumerate([0.5, 0.9, 0.7])]
    assert m.best_metric_value == 0.9 and m.best_checkpoint_hash == hashes[1]
    assert repo.resolve("best-best") == hashes[1]
    assert m.load_checkpoint(load_best=True)["commit_hash"] == hashes[1]
    assert m.load_checkpoint()["commit_hash"] == hashes[2]
    assert [c["commit_hash"] for c in m.list_checkpoints(only_best=True)] == hashes[:2]
    info = m.get_checkpoint_info(hashes[1][:10])
    assert info["is_best"] and info["metrics"]["acc"] == 0.9


def test_commit_message_template_uses_state_fields_and_metrics(repo):
    cfg = CheckpointConfig(save_on_best_metric="val_f1_score", minimize_metric=False,
                           commit_message_template="Best F1: {val_f1_score:.4f} at epoch {epoch}")
    m = CheckpointManager(repo, cfg, experiment_name="msg")
    h = m.save_checkpoint(weights(0), TrainingState(epoch=4, metrics={"val_f1_score": 0.8123}))
    assert repo.get_commit(h).message == "Best F1: 0.8123 at epoch 4"


def test_history_survives_a_new_manager(repo):
    cfg = CheckpointConfig(save_on_best_metric="loss", save_every_n_steps=1)
    m = CheckpointManager(repo, cfg, experiment_name="restart")
    m.save_checkpoint(weights(0), TrainingState(global_step=1, loss=0.9))
    best = m.save_checkpoint(weights(1), TrainingState(global_step=2, loss=0.1))
    m.save_checkpoint(weights(2), TrainingState(global_step=3, loss=0.5))
    again = CheckpointManager(Repository(repo.path), cfg, experiment_name="restart")
    assert len(again.checkpoint_history) == 3
    assert again.best_metric_value == 0.1 and again.best_checkpoint_hash == best
    other = CheckpointManager(Repository(repo.path), cfg, experiment_name="other")
    assert other.checkpoint_history == [] and other.load_checkpoint() is None


def test_failing_callback_is_logged_and_others_still_run(repo, caplog):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="cb")
    seen = []

    def broken(state, commit_hash):
        raise RuntimeError("boom")

    def log_checkpoint(state, commit_hash):
        seen.append((state.global_step, commit_hash))

    m.register_checkpoint_callback(broken)
    m.register_checkpoint_callback(log_checkpoint)
    assert m.list_callbacks() == ["broken", "log_checkpoint"]
    with caplog.at_level(logging.ERROR):
        h = m.save_checkpoint(weights(0), TrainingState(global_step=1))
    assert h is not None and seen == [(1, h)]
    assert "boom" in caplog.text
    m.unregister_checkpoint_callback(broken)
    assert m.list_callbacks() == ["log_checkpoint"]
    m.clear_callbacks()
    assert m.list_callbacks() == []
    with pytest.raises(InvalidArgumentError):
        m.register_checkpoint_callback("not callable")


def test_early_stopping_with_threshold(repo):
    cfg = CheckpointConfig(save_on_best_metric="val_loss", early_stopping_patience=2, early_stopping_threshold=0.05)
    m = CheckpointManager(repo, cfg, experiment_name="es")
    m.save_checkpoint(weights(0), TrainingState(metrics={"val_loss": 1.0}))
    assert m.no_improvement_count == 0
    m.save_checkpoint(weights(1), TrainingState(metrics={"val_loss": 0.98}))  # better, but below the threshold
    assert m.no_improvement_count == 1 and not m.should_stop_early
    m.save_checkpoint(weights(2), TrainingState(metrics={"val_loss": 1.2}))
    assert m.no_improvement_count == 2 and m.should_stop_early
    m.save_checkpoint(weights(3), TrainingState(metrics={"val_loss": 0.5}))
    assert m.no_improvement_count == 0 and not m.should_stop_early
    assert CheckpointManager(repo, cfg, experiment_name="es").no_improvement_count == 0


def test_retention_prunes_but_keeps_history_and_best(repo):
    cfg = CheckpointConfig(save_every_n_steps=1, save_on_best_metric="loss", keep_last_n_checkpoints=2,
                           keep_checkpoint_every_n_epochs=3)
    m = CheckpointManager(repo, cfg, experiment_name="ret")
    losses = [0.1, 0.5, 0.6, 0.7, 0.8, 0.9]
    hashes = [m.save_checkpoint(weights(i), TrainingState(epoch=i, global_step=i + 1, loss=loss))
              for i, loss in enumerate(losses)]
    pruned = {c.hash for c in repo.log() if c.pruned}
    kept = set(hashes) - pruned
    # last 2 (epochs 4, 5), every 3 epochs (0, 3), and the best (epoch 0)
    assert kept == {hashes[0], hashes[3], hashes[4], hashes[5]}
    assert len(repo.log()) == 6  # history keeps pruned commits
    with pytest.raises(PrunedCommitError):
        repo.get_weights(hashes[1])
    assert [h["pruned"] for h in m.checkpoint_history] == [False, True, True, False, False, False]
    assert repo.fsck()["ok"]
    for h in kept:
        assert repo.get_weights(h)["layer.weight"].data.tobytes() == weights(hashes.index(h))["layer.weight"].tobytes()


def test_keep_best_n(repo):
    cfg = CheckpointConfig(save_every_n_steps=1, save_on_best_metric="loss", keep_best_n_checkpoints=2,
                           keep_last_n_checkpoints=1)
    m = CheckpointManager(repo, cfg, experiment_name="kb")
    hashes = [m.save_checkpoint(weights(i), TrainingState(global_step=i + 1, loss=loss))
              for i, loss in enumerate([0.3, 0.1, 0.2, 0.9])]
    kept = {c.hash for c in repo.log() if not c.pruned}
    assert kept == {hashes[1], hashes[2], hashes[3]}


def test_diff_checkpoints(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="d")
    a = m.save_checkpoint(weights(0), TrainingState(global_step=1))
    w = weights(0)
    w["layer.weight"] = w["layer.weight"] * 1.01
    w["extra"] = np.ones(3, np.float32)
    b = m.save_checkpoint(w, TrainingState(global_step=2))
    d = m.diff_checkpoints(a, b)
    assert d["identical"] is False and d["changed"] == ["layer.weight"]
    assert d["added"] == ["extra"] and d["removed"] == []
    assert d["similarity"]["layer.weight"] == pytest.approx(1.0)
    assert m.diff_checkpoints(a, a)["identical"] is True


class ShufflingIterator:
    """A CheckpointableIterator that reshuffles each epoch with its own seeded generator."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._perm()

    def _perm(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self.pos == self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._perm()
        self.pos += 1
        return int(self._order[self.pos - 1])

    def get_state(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def set_state(self, state):
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._perm()


def test_data_pipeline_state_resumes_same_next_batch(repo):
    from coral.training import restore_data_state

    it = ShufflingIterator(10, seed=3)
    [next(it) for _ in range(13)]
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="data")
    m.save_checkpoint(weights(0), TrainingState(global_step=13, data_state=it))
    expected = [next(it) for _ in range(12)]
    fresh = ShufflingIterator(10, seed=3)
    restore_data_state(fresh, CheckpointManager(repo, experiment_name="data").load_checkpoint()["state"].data_state)
    assert [next(fresh) for _ in range(12)] == expected


def test_async_save_writes_in_background_and_wait_blocks(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, async_save=True), experiment_name="async")
    w = weights(0)
    m.save_checkpoint(w, TrainingState(global_step=1))
    w["layer.weight"][:] = 0  # mutating after save must not change the snapshot
    m.save_checkpoint(weights(1), TrainingState(global_step=2))
    m.wait()
    assert len(m.checkpoint_history) == 2
    first = repo.get_weights(m.checkpoint_history[0]["commit_hash"])["layer.weight"].data
    assert first.tobytes() == weights(0)["layer.weight"].tobytes()


def test_a_call_that_saves_nothing_does_not_wait_for_the_save_in_flight(repo):
    """The loop calls the manager every step; only a due save waits for the one being written. A step that
    is due only by the stale policy (the in-flight save not yet recorded) is decided again after the wait."""
    cfg = CheckpointConfig(save_every_n_steps=20, save_on_best_metric="loss",
                           early_stopping_patience=5, async_save=True)
    m = CheckpointManager(repo, cfg, experiment_name="busy")
    release = threading.Event()
    m.register_checkpoint_callback(lambda state, commit: state.global_step != 40 or release.wait(30))  # writer thread
    m.save_checkpoint(weights(0), TrainingState(epoch=0, global_step=20, metrics={"loss": 1.0}))
    m.wait()
    m.save_checkpoint(weights(1), TrainingState(epoch=0, global_step=40, metrics={"loss": 0.5}))
    assert m.save_in_flight
    answered = threading.Event()

    def not_due() -> None:  # a worse loss at step 41: nothing to save, and nothing to wait for
        assert m.save_checkpoint(weights(2), TrainingState(epoch=0, global_step=41, metrics={"loss": 2.0})) is None
        answered.set()

    t = threading.Thread(target=not_due)
    t.start()
    assert answered.wait(10), "a step that saves nothing waited for the save in flight"
    t.join()
    assert m.save_in_flight and m.no_improvement_count == 1  # the early-stopping count was kept at once
    threading.Timer(0.2, release.set).start()
    # the same (epoch, step) as the save in flight (a second call at that step): due by the stale policy, so
    # it waits, then the recorded save makes it not fresh and no better: no second copy
    assert m.save_checkpoint(weights(1), TrainingState(epoch=0, global_step=40, metrics={"loss": 0.5})) is None
    m.wait()
    assert [r["global_step"] for r in m.checkpoint_history] == [20, 40]


def test_async_error_surfaces_at_wait_and_next_save(repo, monkeypatch):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, async_save=True), experiment_name="asyncerr")

    def fail(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(repo, "commit_weights", fail)
    m.save_checkpoint(weights(0), TrainingState(global_step=1))
    with pytest.raises(CheckpointError, match="disk on fire"):
        m.wait()
    m.save_checkpoint(weights(0), TrainingState(global_step=2))
    with pytest.raises(CheckpointError, match="disk on fire"):
        m.save_checkpoint(weights(0), TrainingState(global_step=3))


def test_min_free_space_refuses_and_writes_nothing(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, min_free_space=1 << 62), experiment_name="space")
    before = sorted(repo.store.list())
    with pytest.raises(InsufficientSpaceError, match="min_free_space"):
        m.save_checkpoint(weights(0), TrainingState(global_step=1))
    assert sorted(repo.store.list()) == before and repo.log() == []


def test_auto_interval_uses_young_daly(repo):
    cfg = CheckpointConfig(save_every_n_steps="auto", mean_time_between_failures=3600.0)
    m = CheckpointManager(repo, cfg, experiment_name="auto")
    saved = [s for s in range(1, 6) if m.save_checkpoint(weights(0), TrainingState(global_step=s))]
    assert saved == [2]  # the first save measures its cost
    interval = m.auto_save_interval
    assert interval is not None and interval >= 1
    cost, mtbf = m.policy.save_costs[0], 3600.0
    (s0, t0), (s1, t1) = m.policy.step_times[0], m.policy.step_times[-1]
    assert interval == max(1, round((2 * cost * mtbf) ** 0.5 / ((t1 - t0) / (s1 - s0))))


def test_releases_are_weights_only_semver_and_unique(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="rel")
    m.save_checkpoint(weights(0), TrainingState(global_step=1, optimizer_state={"m": np.ones(4)}))
    rid = m.release("1.0.0", model_card="# Model\nGood.")
    tree = repo.get_commit(rid).tree
    assert set(tree) == {"layer.weight", "layer.bias"}
    assert repo.resolve("v1.0.0") == rid
    m.release("1.10.0")
    m.release("1.2.0-rc.1")
    assert [r["name"] for r in m.list_releases()] == ["v1.0.0", "v1.2.0-rc.1", "v1.10.0"]
    assert m.load_release("1.0.0")["layer.weight"].data.tobytes() == weights(0)["layer.weight"].tobytes()
    with pytest.raises(RefExistsError):
        m.release("1.0.0")
    with pytest.raises(InvalidArgumentError, match="version"):
        m.release("one")


def test_reserved_weight_names_and_bad_state_are_refused(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="bad")
    with pytest.raises(InvalidArgumentError, match="optim/x"):
        m.save_checkpoint({"optim/x": np.ones(2)}, TrainingState(global_step=1))
    with pytest.raises(InvalidArgumentError, match="state"):
        m.save_checkpoint(weights(0), {"epoch": 1})
    with pytest.raises(InvalidArgumentError, match="experiment_name"):
        CheckpointManager(repo, experiment_name="../escape")


def test_epoch_rule_never_saves_the_same_state_twice(repo):
    cfg = CheckpointConfig(save_every_n_epochs=1, save_every_n_steps=2)
    m = CheckpointManager(repo, cfg, experiment_name="once")
    assert m.save_checkpoint(weights(0), TrainingState(epoch=0, global_step=2))  # step rule
    assert m.save_checkpoint(weights(0), TrainingState(epoch=0, global_step=2)) is None  # epoch end, same state
    assert m.save_checkpoint(weights(0), TrainingState(epoch=0, global_step=3))  # epoch end after more steps
    again = CheckpointManager(Repository(repo.path), cfg, experiment_name="once")
    assert not again.should_save_checkpoint(TrainingState(epoch=0, global_step=3))


def test_restore_random_state_puts_every_generator_back(repo):
    from coral.training import restore_random_state

    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1), experiment_name="rrs")
    random.seed(3)
    np.random.seed(4)
    m.save_checkpoint(weights(0), TrainingState(global_step=1))
    expected = (random.random(), np.random.rand())
    random.seed(0)
    restore_random_state(m.load_checkpoint()["state"].random_state)
    assert (random.random(), np.random.rand()) == expected
