"""Tracked PRNG keys through the RNG hook, and a JAX-shuffled pipeline that resumes on the same batch."""

from __future__ import annotations

import coral_jax
import jax
import numpy as np
import pytest
from coral.errors import RefNotFoundError
from coral.plugins import hook
from coral.training import CheckpointConfig, CheckpointManager, TrainingState, restore_data_state


@pytest.fixture
def tracked():
    names: list[str] = []

    def track(name, key):
        names.append(name)
        return coral_jax.track_key(name, key)

    yield track
    for n in names:
        coral_jax.untrack_key(n)


def _key_bytes(k):
    if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key):
        k = jax.random.key_data(k)
    return np.asarray(k).tobytes()


def test_next_key_splits_and_advances_the_tracked_key(tracked):
    tracked("t-split", jax.random.key(0))
    a, b = coral_jax.next_key("t-split"), coral_jax.next_key("t-split")
    assert _key_bytes(a) != _key_bytes(b)
    new, sub = jax.random.split(jax.random.split(jax.random.key(0))[0])
    assert _key_bytes(b) == _key_bytes(sub) and _key_bytes(coral_jax.tracked_key("t-split")) == _key_bytes(
        new
    )
    with pytest.raises(RefNotFoundError, match="nope"):
        coral_jax.next_key("nope")


def test_rng_hook_captures_and_restores_typed_and_raw_keys(tracked):
    tracked("t-typed", jax.random.key(5, impl="rbg"))
    tracked("t-raw", jax.random.PRNGKey(6))
    merged = {}
    for part in hook().coral_get_rng_state():
        merged.update(part or {})
    assert {"python", "numpy", "jax"} <= set(merged)
    expected = [_key_bytes(coral_jax.next_key(n)) for n in ("t-typed", "t-raw")]
    hook().coral_set_rng_state(state=merged)  # rewind
    assert [_key_bytes(coral_jax.next_key(n)) for n in ("t-typed", "t-raw")] == expected
    assert str(jax.random.key_impl(coral_jax.tracked_key("t-typed"))) == "rbg"
    assert coral_jax.tracked_key("t-raw").dtype == np.uint32


def test_core_checkpoint_manager_saves_tracked_keys_and_restores_them(repo, tracked):
    tracked("t-core", jax.random.key(11))
    mgr = CheckpointManager(repo, CheckpointConfig(), experiment_name="jaxrng")
    mgr.save_checkpoint({"w": np.ones(2, np.float32)}, TrainingState(global_step=1), force=True)
    want = _key_bytes(coral_jax.next_key("t-core"))
    coral_jax.track_key("t-core", jax.random.key(999))  # clobber, then resume
    loaded = mgr.load_checkpoint()
    hook().coral_set_rng_state(state=loaded["state"].random_state)
    assert _key_bytes(coral_jax.next_key("t-core")) == want


def _batches(it, n):
    return [np.asarray(next(it)["x"]).tobytes() for _ in range(n)]


def test_shuffle_iterator_resumes_on_the_same_next_batch_across_epochs():
    data = {"x": np.arange(40, dtype=np.float32).reshape(10, 4), "y": np.arange(10)}
    it = coral_jax.ShuffleIterator(data, batch_size=3, key=jax.random.key(0))
    first_epoch = _batches(it, 3)
    assert len(set(first_epoch)) == 3
    state = it.get_state()
    expected = _batches(it, 5)  # crosses into epoch 1 and 2
    fresh = coral_jax.ShuffleIterator(data, batch_size=3, key=jax.random.key(123))
    fresh.set_state(state)
    assert _batches(fresh, 5) == expected
    # the order really is shuffled, and differs between epochs
    assert np.asarray(next(coral_jax.ShuffleIterator(data, 10, jax.random.PRNGKey(0)))["y"]).tolist() != list(
        range(10)
    )


def test_shuffle_iterator_state_goes_through_core_data_state(repo):
    data = {"x": np.arange(24, dtype=np.float32).reshape(12, 2)}
    it = coral_jax.ShuffleIterator(data, batch_size=4, key=jax.random.PRNGKey(2))
    _batches(it, 2)
    mgr = CheckpointManager(repo, CheckpointConfig(), experiment_name="jaxdata")
    mgr.save_checkpoint(
        {"w": np.ones(1, np.float32)}, TrainingState(global_step=2, data_state=it), force=True
    )
    expected = _batches(it, 3)
    other = coral_jax.ShuffleIterator(data, batch_size=4, key=jax.random.PRNGKey(9))
    restore_data_state(other, mgr.load_checkpoint()["state"].data_state)
    assert _batches(other, 3) == expected
