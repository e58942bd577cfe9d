"""CoralCheckpointManager: Orbax's verbs and options, every save a commit, retention by prune + gc."""

from __future__ import annotations

import coral
import coral_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from coral.errors import (
    CheckpointError,
    ConfigError,
    InvalidArgumentError,
    PrunedCommitError,
    RefNotFoundError,
)
from coral_jax import CoralCheckpointManager, CoralCheckpointManagerOptions


def _state(step: int) -> dict:
    return {
        "params": {"w": jnp.full((4, 4), step, jnp.float32), "b": jnp.arange(4, dtype=jnp.bfloat16)},
        "step": step,
    }


def test_save_restore_latest_and_by_step_with_history(tmp_path, bit_equal, linen_state):
    variables, opt_state = linen_state
    mgr = CoralCheckpointManager(tmp_path / "r")
    assert mgr.latest_step() is None and mgr.all_steps() == [] and mgr.best_step() is None
    with pytest.raises(RefNotFoundError, match="no checkpoints"):
        mgr.restore()
    items = {"params": variables["params"], "opt_state": opt_state}
    assert mgr.save(0, items, metrics={"loss": jnp.float32(2.0)})
    later = jax.tree_util.tree_map(lambda x: x + 1, items)
    assert mgr.save(1, later)
    assert mgr.all_steps() == [0, 1] and mgr.latest_step() == 1 and mgr.best_step() == 1
    bit_equal(later, mgr.restore(items_like=items))
    bit_equal(items, mgr.restore(0, items_like=items))
    assert mgr.metrics(0) == {"loss": 2.0} and mgr.metrics(1) is None
    log = mgr.repository.log()
    assert [c.metadata["step"] for c in log] == [1, 0] and log[0].hash == mgr.commit_hash(1)
    # a new manager (a new process) sees the same steps
    again = CoralCheckpointManager(coral.Repository(tmp_path / "r"))
    assert again.all_steps() == [0, 1]
    bit_equal(later, again.restore(1, items_like=items))
    with pytest.raises(RefNotFoundError, match="step 5"):
        again.restore(5)
    with pytest.raises(InvalidArgumentError, match="already has a checkpoint"):
        again.save(1, items, force=True)


def test_save_interval_steps_and_should_save_follow_orbax(repo):
    mgr = CoralCheckpointManager(repo, save_interval_steps=3)
    assert mgr.should_save(1)  # the first save always happens
    saved = [s for s in range(1, 10) if mgr.save(s, _state(s))]
    assert saved == [1, 3, 6, 9]
    assert not mgr.should_save(9) and not mgr.should_save(4)
    assert mgr.save(4, _state(4), force=False) is False
    assert mgr.save(10, _state(10), force=True) and mgr.latest_step() == 10


def test_max_to_keep_prunes_old_commits_and_frees_their_space(repo):
    mgr = CoralCheckpointManager(repo, max_to_keep=2)
    for s in range(4):
        mgr.save(s, {"w": jnp.asarray(np.random.default_rng(s).normal(size=(64, 64)), jnp.float32)})
    assert mgr.all_steps() == [2, 3]
    pruned = [c for c in repo.log() if c.pruned]
    assert sorted(c.metadata["step"] for c in pruned) == [0, 1]  # history still lists them
    with pytest.raises(PrunedCommitError):
        repo.get_weights(pruned[0].hash)
    assert repo.fsck()["ok"] and repo.stats()["unique_bytes"] == 2 * 64 * 64 * 4


def test_best_fn_keeps_the_best_and_keep_period_keeps_multiples(repo):
    losses = {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.8, 5: 0.1, 6: 0.7}
    mgr = CoralCheckpointManager(
        repo,
        CoralCheckpointManagerOptions(
            max_to_keep=2, best_fn=lambda m: m["loss"], best_mode="min", keep_period=4
        ),
    )
    for s, loss in losses.items():
        mgr.save(s, _state(s), metrics={"loss": loss})
    # best two (5, 2) + multiple of keep_period (4) + the newest (6, the resume point)
    assert mgr.all_steps() == [2, 4, 5, 6]
    assert mgr.best_step() == 5
    maxed = CoralCheckpointManager(repo, name="acc", max_to_keep=1, best_fn=lambda m: m["acc"])
    for s, acc in [(1, 0.2), (2, 0.9), (3, 0.5)]:
        maxed.save(s, _state(s), metrics={"acc": acc})
    assert maxed.all_steps() == [2, 3] and maxed.best_step() == 2
    assert CoralCheckpointManager(repo).all_steps() == [2, 4, 5, 6]  # managers are kept apart by name


def test_unchanged_arrays_are_stored_once_across_steps(repo):
    mgr = CoralCheckpointManager(repo)
    frozen = jnp.asarray(np.random.default_rng(0).normal(size=(128, 128)), jnp.float32)
    for s in range(3):
        mgr.save(s, {"frozen": frozen, "head": jnp.full((8,), s, jnp.float32)})
    stats = repo.stats()
    assert stats["logical_bytes"] == 3 * (128 * 128 * 4 + 32)
    assert stats["unique_bytes"] == 128 * 128 * 4 + 3 * 32
    a, b = repo.get_commit(mgr.commit_hash(0)), repo.get_commit(mgr.commit_hash(2))
    assert a.tree["frozen"].chunks == b.tree["frozen"].chunks


def test_async_save_snapshots_in_caller_and_wait_until_finished(repo, bit_equal):
    mgr = CoralCheckpointManager(repo, enable_async=True, max_to_keep=2)
    host = {"w": np.zeros(3, np.float32)}
    with repo.store.lock("gc"):  # holds the background writer back until the caller has moved on
        assert mgr.save(1, {"p": jnp.ones(3), "host": host})
        assert 1 in mgr.all_steps()  # visible while being written
        host["w"][:] = 7  # mutating after save must not change what was saved
    mgr.wait_until_finished()
    assert not mgr.restore(1)["host"]["w"].any()
    mgr.save(2, _state(2))
    mgr.save(3, _state(3))
    mgr.wait_until_finished()
    assert mgr.all_steps() == [2, 3]
    bit_equal(_state(3), mgr.restore(3, items_like=_state(0)))
    assert CoralCheckpointManager(repo).all_steps() == [2, 3]


def test_async_errors_are_raised_by_wait_until_finished(repo):
    mgr = CoralCheckpointManager(repo, enable_async=True)
    mgr.save(1, {"w": jnp.ones(2)})
    mgr.wait_until_finished()
    mgr.repository.store.compare_and_swap("HEAD", mgr.repository.store.get_ref("HEAD"), "ref: heads/bad name")
    mgr.save(2, {"w": jnp.ones(2)})
    with pytest.raises(CheckpointError, match="async checkpoint failed"):
        mgr.wait_until_finished()
    mgr.wait_until_finished()  # raised once


def test_rng_state_is_saved_and_restored_when_asked(repo):
    coral_jax.track_key("mgr-rng", jax.random.key(4))
    try:
        mgr = CoralCheckpointManager(repo, save_rng_state=True)
        np.random.seed(3)
        mgr.save(1, {"w": jnp.ones(2), "rng": jax.random.key(1)})  # a user item called "rng" is fine
        want = (np.random.rand(), np.asarray(jax.random.key_data(coral_jax.next_key("mgr-rng"))).tobytes())
        np.random.seed(99)
        coral_jax.track_key("mgr-rng", jax.random.key(0))
        restored = mgr.restore()
        got = (np.random.rand(), np.asarray(jax.random.key_data(coral_jax.next_key("mgr-rng"))).tobytes())
        assert got == want and set(restored) == {"w", "rng"}
    finally:
        coral_jax.untrack_key("mgr-rng")


def test_iterators_inside_items_are_restored_in_place(repo):
    data = {"x": np.arange(20, dtype=np.float32).reshape(10, 2)}
    it = coral_jax.ShuffleIterator(data, 3, jax.random.key(0))
    next(it)
    mgr = CoralCheckpointManager(repo)
    mgr.save(1, {"params": jnp.ones(2), "data": it})
    want = np.asarray(next(it)["x"]).tobytes()
    fresh = coral_jax.ShuffleIterator(data, 3, jax.random.key(5))
    out = mgr.restore(items_like={"params": jnp.zeros(2), "data": fresh})
    assert out["data"] is fresh and np.asarray(next(fresh)["x"]).tobytes() == want
    assert set(mgr.restore()["data"]) == {"key", "impl", "epoch", "position"}


def test_options_are_validated_and_delete_forgets_a_step(repo):
    with pytest.raises(ConfigError, match="max_to_keep"):
        CoralCheckpointManagerOptions(max_to_keep=0)
    with pytest.raises(ConfigError, match="best_mode"):
        CoralCheckpointManager(repo, best_mode="lowest")
    with pytest.raises(ConfigError, match="max_to_kep"):
        CoralCheckpointManager(repo, max_to_kep=3)
    mgr = CoralCheckpointManager(repo)
    with pytest.raises(InvalidArgumentError, match="step"):
        mgr.save(-1, {"w": jnp.ones(1)})
    mgr.save(1, {"w": jnp.ones(1)})
    mgr.save(2, {"w": jnp.zeros(1)})
    mgr.delete(1)
    assert mgr.all_steps() == [2] and CoralCheckpointManager(repo).all_steps() == [2]


def test_saving_an_existing_step_returns_false_and_raises_only_when_forced(repo):
    mgr = CoralCheckpointManager(repo)
    assert mgr.save(2, _state(2))
    assert mgr.save(2, _state(2)) is False and mgr.all_steps() == [2]
    with pytest.raises(InvalidArgumentError, match="already has a checkpoint"):
        mgr.save(2, _state(2), force=True)
    # docs/jax.md's save() row says the same thing
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "jax.md"
    if not doc.exists():
        pytest.skip("docs/jax.md is not in this checkout")
    row = next(line for line in doc.read_text().splitlines() if line.startswith("| `save(step"))
    assert "a step already saved raises |" not in row  # the old, wrong claim
    assert "already saved" in row and "returns False" in row and "force=True" in row


@pytest.mark.parametrize("enable_async", [False, True])
def test_push_to_pushes_each_step_and_a_fresh_clone_restores_it(tmp_path, bit_equal, linen_state, enable_async):
    variables, opt_state = linen_state
    coral.Repository(tmp_path / "remote", init=True).close()
    with coral.Repository(tmp_path / "r", init=True) as repo:
        repo.add_remote("origin", tmp_path / "remote")
    with pytest.raises(coral.errors.UnknownRemoteError, match="remote='nowhere'"):
        CoralCheckpointManager(tmp_path / "r", push_to="nowhere")
    mgr = CoralCheckpointManager(tmp_path / "r", push_to="origin", max_to_keep=2, enable_async=enable_async)
    items = {"params": variables["params"], "opt_state": opt_state}
    for step in range(3):
        items = jax.tree_util.tree_map(lambda x: x + 1, items)
        mgr.save(step, items, metrics={"loss": jnp.float32(3.0 - step)})
    mgr.wait_until_finished()  # waits for the background pushes too
    clone = coral.Repository.clone(tmp_path / "remote", tmp_path / "new-machine", depth=1)
    clone.close()
    fresh = CoralCheckpointManager(tmp_path / "new-machine")
    assert fresh.latest_step() == 2
    bit_equal(items, fresh.restore(items_like=items))
