"""JAX snapshots (issue 32): what a checkpoint costs a JAX training loop, Coral against Orbax, sync and async.

Workload: a 240 MiB fp32 pytree (an MLP's params plus ``optax.adam``'s two moments, 80 MiB each) trained by a
jitted step that donates its state (``donate_argnums=0``, as Flax loops do), with about ``--work`` seconds of
real jitted steps between saves (the step count is calibrated at start), so background writes compete for the
CPU as they would in training. One *job* = ``--saves`` saves, each after a block of work; its time runs until
every checkpoint is durable (Orbax ``wait_until_finished``, Coral ``close()``). Coral's default delta packing of the
previous step runs in a low-priority background thread and competes for the CPU during the job; what is left of it
when the job ends (it resumes at the next write if the process exits) is reported apart, as ``packing left``.

Arms, interleaved job by job with the order rotated each round: ``none`` (no checkpoints), ``coral-sync``,
``orbax-sync`` (``CheckpointManager``), ``coral-async`` (``enable_async=True``), ``orbax-async``
(``enable_async_checkpointing=True``). Default options otherwise. Reported: blocked seconds per save (median,
min-max over every save of the arm), per GB, the ratio to Orbax in the same mode, job time against ``none`` in
the same round, the peak RSS growth during the job (sampled every 5 ms), bit-exactness of every saved step
(restored and compared with digests the ``none`` job takes at the same points; the steps are deterministic, and
``none``'s digests are checked to agree round to round) and the load average.

``python bench/jax_snapshots.py [--rounds 3 --saves 4 --work 1.5 --out table.md]``: about 4 minutes on a quiet
2-core machine, bounded by rounds x 5 jobs x saves x (work + save) plus verification (< 6 min).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from _measure import settle, tree_bytes  # noqa: E402

ARMS = ("none", "coral-sync", "orbax-sync", "coral-async", "orbax-async")
BATCH = 16


# ---- workload --------------------------------------------------------------------------------------------
def make_state(mib: int) -> tuple[dict[str, Any], Any]:
    """Host copy of the initial state (params + adam moments, fp32, ~``mib`` MiB in all) and the optimizer."""
    width = 1024
    blocks = max(1, round(mib * 2**20 / 3 / 4 / (2 * width * 2 * width)))
    key = jax.random.key(0)
    params = {}
    for i in range(blocks):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        params[f"block{i}"] = {
            "up": jax.random.normal(k1, (width, 2 * width)) * 0.02,
            "down": jax.random.normal(k2, (2 * width, width)) * 0.02,
            "bias": jnp.zeros(width),
        }
    tx = optax.adam(1e-3)
    state = {"params": params, "opt_state": tx.init(params)}
    return jax.device_get(state), tx


def make_step(tx: Any, blocks: int) -> Any:
    x = jax.random.normal(jax.random.key(1), (BATCH, 1024))
    y = jax.random.normal(jax.random.key(2), (BATCH, 1024))

    def loss_fn(p: Any) -> jax.Array:
        h = x
        for i in range(blocks):
            b = p[f"block{i}"]
            h = h + jax.nn.gelu(h @ b["up"]) @ b["down"] + b["bias"]
        return jnp.mean((h - y) ** 2)

    def step(s: Any) -> Any:
        grads = jax.grad(loss_fn)(s["params"])
        updates, opt_state = tx.update(grads, s["opt_state"], s["params"])
        return {"params": optax.apply_updates(s["params"], updates), "opt_state": opt_state}

    return jax.jit(step, donate_argnums=0)


def digest(state: Any) -> list[str]:
    return [hashlib.blake2b(np.asarray(x).tobytes(), digest_size=16).hexdigest() for x in jax.tree.leaves(state)]


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples RSS every 5 ms in a thread; ``growth`` is the peak minus RSS at start."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())
        self.growth = self.peak - self.start


# ---- the arms ----------------------------------------------------------------------------------------------
class Arm:
    def __init__(self, name: str, folder: Path) -> None:
        self.name, self.folder = name, folder
        kind, _, mode = name.partition("-")
        self.kind, self.asynchronous = kind, mode == "async"
        if kind == "coral":
            from coral_jax import CoralCheckpointManager

            self.mgr = CoralCheckpointManager(folder, enable_async=self.asynchronous)
        elif kind == "orbax":
            opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=self.asynchronous)
            self.mgr = ocp.CheckpointManager(folder, options=opts)

    def save(self, step: int, state: Any) -> None:
        if self.kind == "coral":
            self.mgr.save(step, state)
        elif self.kind == "orbax":
            self.mgr.save(step, args=ocp.args.StandardSave(state))

    def finish(self) -> None:
        if self.kind == "coral":
            self.mgr.close()
        elif self.kind == "orbax":
            self.mgr.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        if self.kind == "coral":
            return self.mgr.restore(step, items_like=like)
        return self.mgr.restore(step, args=ocp.args.StandardRestore(like))

    def close(self) -> None:
        if self.kind == "orbax":
            self.mgr.close()


def run_job(name: str, folder: Path, init: Any, step_fn: Any, n_steps: int, saves: int) -> dict[str, Any]:
    """One training job with ``saves`` saves; returns its timings, peak RSS growth and digests (``none``)."""
    arm = Arm(name, folder)
    state = jax.device_put(init)
    jax.block_until_ready(state)
    blocked: list[float] = []
    digests: list[list[str]] = []
    excluded = 0.0
    with PeakRss() as mem:
        t0 = time.perf_counter()
        for k in range(saves):
            for _ in range(n_steps):
                state = step_fn(state)
            jax.block_until_ready(state)
            if name == "none":  # reference digests, outside the job's time (no background work to overlap)
                t = time.perf_counter()
                digests.append(digest(state))
                excluded += time.perf_counter() - t
                continue
            t = time.perf_counter()
            arm.save(k, state)
            blocked.append(time.perf_counter() - t)
        arm.finish()
        total = time.perf_counter() - t0 - excluded
    t = time.perf_counter()
    if arm.kind == "coral":
        arm.mgr.repository.wait()  # the delta packing still running after the job
    tail = time.perf_counter() - t
    return {"arm": arm, "blocked": blocked, "total": total, "rss": mem.growth, "digests": digests, "tail": tail}


def verify(job: dict[str, Any], like: Any, reference: list[list[str]]) -> int:
    """How many of the job's saved steps restore bit-equal to the reference digests."""
    arm = job["arm"]
    ok = sum(digest(arm.restore(k, like)) == want for k, want in enumerate(reference))
    arm.close()
    return ok


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--saves", type=int, default=4)
    ap.add_argument("--work", type=float, default=1.5, help="seconds of jitted steps between saves")
    ap.add_argument("--mib", type=int, default=240, help="state size (params + 2 adam moments)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    ap.add_argument("--workdir", type=Path, help="where the checkpoints go (default: a temporary folder)")
    args = ap.parse_args()
    started = time.time()
    loads = [os.getloadavg()[0]]
    work = Path(tempfile.mkdtemp(prefix="jax-snapshots-", dir=args.workdir))
    try:
        init, tx = make_state(args.mib)
        blocks = len(init["params"])
        nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(init))
        cpu = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), init)
        step_fn = make_step(tx, blocks)
        state = step_fn(jax.device_put(init))  # compile
        jax.block_until_ready(state)
        t = time.perf_counter()
        for _ in range(3):
            state = step_fn(state)
        jax.block_until_ready(state)
        n_steps = max(1, round(args.work / ((time.perf_counter() - t) / 3)))
        del state
        print(f"state {nbytes / 2**20:.0f} MiB; {n_steps} steps (~{args.work} s) between saves", flush=True)
        for name in ARMS[1:]:  # warm-up: first-save costs (imports, thread pools, compilation) of both libraries
            job = run_job(name, work / f"warm-{name}", init, step_fn, 1, 1)
            job["arm"].close()
        results: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
        exact: dict[str, list[int]] = {a: [] for a in ARMS[1:]}
        references: list[list[list[str]]] = []
        for r in range(args.rounds):
            order = ARMS[r % len(ARMS):] + ARMS[: r % len(ARMS)]
            jobs = {}
            for name in order:
                settle(work, nbytes)
                jobs[name] = run_job(name, work / f"r{r}-{name}", init, step_fn, n_steps, args.saves)
                results[name].append(jobs[name])
                loads.append(os.getloadavg()[0])
                print(f"round {r} {name}: total {jobs[name]['total']:.2f} s, blocked "
                      f"{[round(b, 3) for b in jobs[name]['blocked']]}", flush=True)
            references.append(jobs["none"]["digests"])
            for name in ARMS[1:]:
                exact[name].append(verify(jobs[name], like, jobs["none"]["digests"]))
                jobs[name]["stored"] = tree_bytes(work / f"r{r}-{name}")
                shutil.rmtree(work / f"r{r}-{name}", ignore_errors=True)
        deterministic = all(ref == references[0] for ref in references)
        loads.append(os.getloadavg()[0])
        table = report(args, results, exact, nbytes, n_steps, deterministic, loads, started)
        print(table)
        if args.out:
            args.out.write_text(table)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], exact: dict[str, list[int]],
    nbytes: int, n_steps: int, deterministic: bool, loads: list[float], started: float,
) -> str:
    gb = nbytes / 1e9
    none_totals = [j["total"] for j in results["none"]]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}-{time.strftime('%H:%M', time.gmtime())} UTC, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, orbax-checkpoint {version('orbax-checkpoint')}; "
        f"load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the run. State {nbytes / 2**20:.0f} MiB fp32, "
        f"{n_steps} jitted steps (~{args.work} s) between saves, {args.saves} saves per job, {args.rounds} rounds. "
        f"Job without checkpoints: {med(none_totals)} s.",
        "",
        "| arm | blocked s per save, median (min-max) | s per GB | vs Orbax, same mode (median ratio) "
        "| job time vs none, median (min-max) | packing left at the end, s (median) "
        "| peak RSS growth during the job, MiB (max) | stored MiB per job | bit-exact saved steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ARMS[1:]:
        jobs = results[name]
        blocked = [b for j in jobs for b in j["blocked"]]
        peer = "orbax-" + name.split("-")[1]
        peer_blocked = [b for j in results[peer] for b in j["blocked"]]
        ratio = statistics.median(blocked) / statistics.median(peer_blocked)
        vs_none = [j["total"] / n for j, n in zip(jobs, none_totals, strict=True)]
        stored = statistics.median(j["stored"] for j in jobs) / 2**20
        lines.append(
            f"| {name} | {med(blocked)} | {statistics.median(blocked) / gb:.3f} | "
            f"{'-' if name == peer else f'{ratio:.2f}x'} | {med(vs_none)} | "
            f"{statistics.median(j['tail'] for j in jobs):.2f} | {max(j['rss'] for j in jobs) / 2**20:.0f} | "
            f"{stored:.0f} | {sum(exact[name])}/{len(jobs) * args.saves} |"
        )
    lines += ["", f"Reference digests identical in every round (deterministic steps): {deterministic}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
