"""bench/compare.py's JAX cells: one jitted Optax AdamW job (a residual MLP like the PyTorch one) checkpointed by
Orbax's CheckpointManager (sync and async) or coral_jax.CoralCheckpointManager (sync and async)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _compare_common import CHECKPOINTS, RESUME_FROM, SIZES, digest_arrays, emit, restore_step
from _compare_common import tree_bytes as stored

ALTERNATIVES = ["none", "orbax", "orbax-async", "coral", "coral-async"]
CASE_ALTERNATIVES = {"fp32": ALTERNATIVES}
LABELS = {
    "none": "no checkpoints",
    "orbax": "Orbax `CheckpointManager` (sync)",
    "orbax-async": "Orbax `CheckpointManager` (async)",
    "coral": "Coral `CoralCheckpointManager`",
    "coral-async": "Coral `CoralCheckpointManager(enable_async=True)`",
}
IN, OUT = 256, 64
SETTINGS = {"batch": 64}


def init(size: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    d, h = size["small_d"], size["small_h"]

    def dense(i: int, o: int) -> dict[str, jax.Array]:
        return {"w": jnp.asarray(rng.normal(0, i**-0.5, (i, o)).astype(np.float32)), "b": jnp.zeros(o)}

    params = {"inp": dense(IN, d), "out": dense(d, OUT)}
    for k in range(size["small_blocks"]):
        params[f"block{k}"] = {"fc1": dense(d, h), "fc2": dense(h, d), "ln": jnp.ones(d)}
    return params


def forward(params: dict[str, Any], x: jax.Array) -> jax.Array:
    z = x @ params["inp"]["w"] + params["inp"]["b"]
    for k in sorted(n for n in params if n.startswith("block")):
        p = params[k]
        y = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-5) * p["ln"]
        z = z + jax.nn.gelu(y @ p["fc1"]["w"] + p["fc1"]["b"]) @ p["fc2"]["w"] + p["fc2"]["b"]
    return z @ params["out"]["w"] + params["out"]["b"]


def batch(step: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``step`` from its own seed (a resumed run needs no generator state); ``seed`` overrides it."""
    teacher = np.random.default_rng(1)
    w1 = teacher.normal(0, IN**-0.5, (IN, 256)).astype(np.float32)
    w2 = teacher.normal(0, 1 / 16, (256, OUT)).astype(np.float32)
    rng = np.random.default_rng(10_000 + step if seed is None else seed)
    x = rng.normal(size=(SETTINGS["batch"], IN)).astype(np.float32)
    return x, (np.tanh(x @ w1) @ w2).argmax(-1)


def setup(size: dict[str, Any]) -> tuple[Any, Any]:
    steps = size["every"] * CHECKPOINTS
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-3, max(1, steps // 10), steps, 1e-4)
    tx = optax.adamw(sched, weight_decay=0.01)

    @jax.jit
    def step_fn(state: dict[str, Any], x: jax.Array, y: jax.Array) -> tuple[dict[str, Any], jax.Array]:
        def loss_fn(p: Any) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

    params = init(size)
    return {"params": params, "opt_state": tx.init(params)}, step_fn


def heldout_loss(params: Any) -> float:
    """The loss on a fixed held-out batch: the metric that picks the best checkpoint."""
    x, y = batch(0, seed=7)
    return float(optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean())


def digest(state: Any) -> str:
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return digest_arrays([(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves])


class Saver:
    def __init__(self, alt: str, root: Path) -> None:
        self.alt = alt
        if alt.startswith("orbax"):
            import orbax.checkpoint as ocp

            self.ocp = ocp
            opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=alt.endswith("async"), max_to_keep=None)
            self.mgr = ocp.CheckpointManager((root / "orbax").absolute(), options=opts)
        elif alt.startswith("coral"):
            from coral_jax import CoralCheckpointManager

            self.mgr = CoralCheckpointManager(str(root / "coral"), enable_async=alt.endswith("async"),
                                              save_on_preemption=False)

    def save(self, step: int, state: Any) -> None:
        if self.alt.startswith("orbax"):
            self.mgr.save(step, args=self.ocp.args.StandardSave(state))
        else:
            self.mgr.save(step, state)

    def finish(self) -> None:
        self.mgr.wait_until_finished()
        self.mgr.close()

    def restore(self, step: int, like: Any) -> Any:
        if self.alt.startswith("orbax"):
            abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
            return self.mgr.restore(step, args=self.ocp.args.StandardRestore(abstract))
        return self.mgr.restore(step, items_like=like)


def run(spec: dict[str, Any]) -> None:
    size = SIZES[spec["size"]]
    SETTINGS["batch"] = spec.get("batch", 64)
    every, alt, root = size["every"], spec["alt"], Path(spec["dir"])
    steps = [every * i for i in range(1, CHECKPOINTS + 1)]
    root.mkdir(parents=True, exist_ok=True)
    state, step_fn = setup(size)
    jax.block_until_ready(step_fn(state, *batch(0)))  # compile outside every timing
    phase, out = spec["phase"], {}
    if alt.startswith("orbax"):  # imported before any timing
        import orbax.checkpoint  # noqa: F401
    elif alt.startswith("coral"):
        import coral_jax  # noqa: F401
    t_open = time.perf_counter()
    saver = Saver(alt, root) if alt != "none" else None
    t_open = time.perf_counter() - t_open
    if phase == "train":
        blocked, digests, val = [], {}, {}
        t0 = time.perf_counter()
        for step in range(1, steps[-1] + 1):
            state, _loss = step_fn(state, *batch(step))
            if step % every == 0:
                jax.block_until_ready(state)
                d0 = time.perf_counter()
                digests[step] = digest(state)
                val[step] = heldout_loss(state["params"])
                t0 += time.perf_counter() - d0  # the digest is ours, not the job's
                if saver is not None:
                    t = time.perf_counter()
                    saver.save(step, state)
                    blocked.append(time.perf_counter() - t)
        if saver is not None:
            saver.finish()
        jax.block_until_ready(state)
        wall = time.perf_counter() - t0
        if alt.startswith("coral"):  # background packing done (outside the wall time)
            saver.mgr.repository.wait()
        out = {"wall_s": wall, "blocked_s": blocked, "bytes_10": stored(root),
               "digests": {str(k): v for k, v in digests.items()}, "val": {str(k): v for k, v in val.items()},
               "params": sum(x.size for x in jax.tree_util.tree_leaves(state["params"])),
               "state_mib": sum(x.nbytes for x in jax.tree_util.tree_leaves(state["params"])) / 2**20}
    elif phase == "restore":
        step = restore_step(spec, steps)
        t = time.perf_counter()
        got = jax.block_until_ready(saver.restore(step, state))
        out = {"restore_s": time.perf_counter() - t + t_open, "digest": digest(got), "step": step}
    elif phase == "retain":
        for s in steps[:-3]:
            saver.mgr.delete(s)
        saver.finish()
        if alt.startswith("coral"):
            saver.mgr.repository.gc(expire_reflog="now")
            saver.mgr.repository.wait()
        out = {"bytes_3": stored(root)}
    elif phase == "resume":
        start = steps[RESUME_FROM - 1]
        state = saver.restore(start, state)
        for step in range(start + 1, steps[-1] + 1):
            state, _loss = step_fn(state, *batch(step))
        out = {"digest": digest(jax.block_until_ready(state)), "step": steps[-1]}
    emit(out)
