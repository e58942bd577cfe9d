"""Helper process for test_exact_resume: a jitted Flax + Optax loop with a JAX-shuffled pipeline and dropout.

``python resume_script.py straight REPO OUT N``: run 2N steps in one go, write the final state to OUT (.npz of
raw bytes); then, from a fresh start, run N steps and save step N with CoralCheckpointManager.
``python resume_script.py resume REPO OUT N``: from deliberately different initial values, restore the latest
step, run N more steps, write the final state to OUT.
"""

from __future__ import annotations

import sys

import coral_jax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(1)(x)


MODEL = MLP()
TX = optax.adamw(1e-2, weight_decay=1e-3)
X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
DATA = {"x": X, "y": (X @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]}


def fresh(seed: int):
    params = MODEL.init(jax.random.key(seed), X[:1], False)["params"]
    pipeline = coral_jax.ShuffleIterator(DATA, batch_size=8, key=jax.random.key(seed + 1))
    coral_jax.track_key("dropout", jax.random.key(seed + 2))
    return {"params": params, "opt_state": TX.init(params), "data": pipeline}


@jax.jit
def train_step(params, opt_state, batch, dropout_key):
    def loss_fn(p):
        pred = MODEL.apply({"params": p}, batch["x"], True, rngs={"dropout": dropout_key})
        return jnp.mean((pred - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = TX.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def run(state, steps: int):
    for _ in range(steps):
        batch = next(state["data"])
        p, o, _ = train_step(state["params"], state["opt_state"], batch, coral_jax.next_key("dropout"))
        state["params"], state["opt_state"] = p, o
    return state


def dump(state, out: str) -> None:
    arrays, _ = coral_jax.flatten_pytree({"params": state["params"], "opt_state": state["opt_state"]})
    np.savez(out, **{n.replace("/", "|"): np.frombuffer(a.tobytes(), np.uint8) for n, a in arrays.items()})


def main(mode: str, repo: str, out: str, n: int) -> None:
    mgr = coral_jax.CoralCheckpointManager(repo, save_rng_state=True, enable_async=True)
    if mode == "straight":
        dump(run(fresh(0), 2 * n), out)
        state = run(fresh(0), n)
        mgr.save(n, state)
        dump(state, out.replace(".npz", "-half.npz"))
    else:
        template = fresh(100)  # different values everywhere: only the restore can make them right
        state = mgr.restore(items_like=template)
        assert state["data"] is template["data"] and mgr.latest_step() == n
        dump(run(state, n), out)
    mgr.wait_until_finished()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
