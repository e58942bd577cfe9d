"""Async saves without copies (issue 32): the loop keeps training (and donating its state) while the
background writes, and every commit holds the state as it was when ``save`` was called."""

from __future__ import annotations

import logging
import threading

import coral_jax.manager as manager_module
import jax
import jax.numpy as jnp
import numpy as np
import optax
from coral_jax import CoralCheckpointManager


def _host(tree):
    """A private numpy copy of every leaf: the reference a commit must match bit for bit."""
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)


def _assert_same_bits(expected, restored) -> None:
    le, lr = jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(restored)
    assert len(le) == len(lr)
    for e, r in zip(le, lr, strict=True):
        r = np.asarray(r)
        assert e.dtype == r.dtype and e.shape == r.shape and e.tobytes() == r.tobytes()


def test_async_saves_in_a_loop_that_donates_its_state_keep_every_commit_bit_equal(tmp_path):
    key = jax.random.key(0)
    params = {
        f"layer{i}": {"w": jax.random.normal(jax.random.fold_in(key, i), (256, 256)), "b": jnp.zeros(256)}
        for i in range(3)
    }
    tx = optax.adam(1e-2)
    state = {"params": params, "opt_state": tx.init(params)}
    x = jax.random.normal(jax.random.fold_in(key, 99), (32, 256))

    def loss_fn(p):
        h = x
        for i in range(3):
            h = jnp.tanh(h @ p[f"layer{i}"]["w"] + p[f"layer{i}"]["b"])
        return jnp.mean(h**2)

    def train_step(s):
        grads = jax.grad(loss_fn)(s["params"])
        updates, opt_state = tx.update(grads, s["opt_state"], s["params"])
        return {"params": optax.apply_updates(s["params"], updates), "opt_state": opt_state}

    step_fn = jax.jit(train_step, donate_argnums=0)  # the saved buffers are donated to the very next step
    counters = np.zeros(4, np.int64)  # a mutable numpy leaf, changed in place right after each save
    expected = {}
    with CoralCheckpointManager(tmp_path / "r", enable_async=True) as mgr:
        for step in range(6):
            counters += step + 1
            expected[step] = _host({"state": state, "counters": counters})
            assert mgr.save(step, {"state": state, "counters": counters})
            counters[:] = -1  # in place, while the background may still be writing
            for _ in range(3):
                state = step_fn(state)  # donates the arrays the save just took
        final = _host(state)
    mgr = CoralCheckpointManager(tmp_path / "r")
    assert mgr.all_steps() == list(range(6))
    for step, want in expected.items():
        _assert_same_bits(want, mgr.restore(step))
    # the loop really trained: the first commit is not the final state
    assert _host(mgr.restore(0))["state"]["params"]["layer0"]["w"].tobytes() != final["params"]["layer0"]["w"].tobytes()


class _Gate:
    """Holds every background commit until opened, and counts how many were in flight at once."""

    def __init__(self, real):
        self.real = real
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.open.wait()
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def _state(step: int) -> dict:
    return {"w": jnp.full((64, 64), step, jnp.float32)}


def test_second_async_save_waits_for_the_first(tmp_path, monkeypatch):
    gate = _Gate(manager_module.commit_arrays)
    monkeypatch.setattr(manager_module, "commit_arrays", gate)
    mgr = CoralCheckpointManager(tmp_path / "r", enable_async=True)
    assert mgr.save(1, _state(1))
    second = threading.Thread(target=mgr.save, args=(2, _state(2)))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # held back: the first snapshot is still in flight
    gate.open.set()
    second.join()
    mgr.close()
    assert mgr.all_steps() == [1, 2] and gate.most == 1
    _assert_same_bits(_host(_state(2)), mgr.restore(2))


def test_skip_save_if_busy_skips_with_a_warning(tmp_path, monkeypatch, caplog):
    gate = _Gate(manager_module.commit_arrays)
    monkeypatch.setattr(manager_module, "commit_arrays", gate)
    mgr = CoralCheckpointManager(tmp_path / "r", enable_async=True, skip_save_if_busy=True)
    assert mgr.save(1, _state(1))
    with caplog.at_level(logging.WARNING, logger="coral_jax.manager"):
        assert mgr.save(2, _state(2)) is False
    assert "step 2 not saved" in caplog.text and "skip_save_if_busy" in caplog.text
    gate.open.set()
    mgr.wait_until_finished()
    assert mgr.save(3, _state(3))  # not busy any more
    mgr.close()
    assert mgr.all_steps() == [1, 3] and gate.most == 1
