"""Coral storage benchmark: size, save, load and memory figures on a real AdamW training run (``make bench``).

Run ``python bench/storage.py`` (about 5 minutes on two cores; ``--quick`` for a smoke run). Every figure
is a ratio measured in this one run, against ``torch.save``/``torch.load`` on the same state where the
target is relative. Results print as a table (and go to ``--json`` if given); BENCHMARKS.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MB = 1024 * 1024  # sizes print in MiB; speeds in GB/s (10**9 bytes per second)


# ---- reporting ---------------------------------------------------------------------------------------------
class Table:
    """Rows of (requirement, target, measured, pass, note), printed as Markdown."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, key: str, what: str, target: str, measured: str, ok: bool | None, note: str = "") -> None:
        self.rows.append(
            {"key": key, "what": what, "target": target, "measured": measured, "ok": ok, "note": note}
        )
        mark = "info" if ok is None else ("PASS" if ok else "MISS")
        print(f"  [{mark}] {what}: {measured} (target {target}) {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| # | Requirement | Target | Measured | Result | Notes |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(self.rows, 1):
            mark = "info" if r["ok"] is None else ("pass" if r["ok"] else "**miss**")
            lines.append(f"| {i} | {r['what']} | {r['target']} | {r['measured']} | {mark} | {r['note']} |")
        return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- helpers over a repository -----------------------------------------------------------------------------
def commit_state(repo: Any, arrays: dict[str, np.ndarray], message: str) -> str:
    """One checkpoint, as ``CheckpointManager`` commits it (``commit_weights``: write, then commit)."""
    return repo.commit_weights(arrays, message)


def new_bytes_per_commit(repo: Any, commits: list[str]) -> list[int]:
    """For each commit (oldest first): on-disk bytes of the objects it introduced (new chunks + the commit)."""
    from _measure import object_file_bytes
    from coral.objects.tensors import chunk_key
    from coral.version_control.commit import commit_key

    seen: set[str] = set()
    out = []
    for cid in commits:
        tree = repo.get_commit(cid).tree
        size = object_file_bytes(repo, commit_key(cid))
        for entry in tree.values():
            for ch in entry.chunks:
                if ch not in seen:
                    seen.add(ch)
                    size += object_file_bytes(repo, chunk_key(ch))
        out.append(size)
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    """xxh3-128 over every name and byte: checks that a checkpoint loads bit for bit."""
    import xxhash

    h = xxhash.xxh3_128()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).view(np.uint8).reshape(-1))
    return h.hexdigest()


def stored_by_kind(repo: Any, commits: list[str], kind: Any) -> dict[str, tuple[int, int]]:
    """{kind: (stored bytes of its distinct chunks, raw bytes over all commits)} for a breakdown."""
    from _measure import object_file_bytes
    from coral.objects.tensors import chunk_key

    seen: set[str] = set()
    out: dict[str, list[int]] = {}
    for cid in commits:
        for name, entry in repo.get_commit(cid).tree.items():
            acc = out.setdefault(kind(name), [0, 0])
            acc[1] += entry.nbytes
            for ch in entry.chunks:
                if ch not in seen:
                    seen.add(ch)
                    acc[0] += object_file_bytes(repo, chunk_key(ch))
    return {k: (v[0], v[1]) for k, v in out.items()}


def raw_bytes(arrays: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays.values())


# ---- phases ------------------------------------------------------------------------------------------------
def run_training(args: argparse.Namespace, work: Path, table: Table) -> dict[str, Any]:
    """The fp32 AdamW run: checkpoints of weights + Adam moments (fp32) and of bf16 weights, repacked as saved."""
    import torch
    from _measure import durable_torch_save, settle, timed, tree_bytes
    from _workload import Teacher, adam_state, as_numpy, make_model, parameter_count, train, warmup_cosine, weights
    from coral import Repository

    model = make_model()
    n_params = parameter_count(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = warmup_cosine(opt, args.steps, warmup=args.every)
    full = Repository(work / "full", init=True)
    bf16 = Repository(work / "bf16", init=True)
    tdir = work / "torch"
    tdir.mkdir()
    raw_full = raw_bf16 = 0
    commits: list[str] = []
    digests: list[str] = []
    saves, repacks, torch_saves = [], [], []
    t0 = time.perf_counter()
    for step, loss in train(model, opt, args.steps, args.every, Teacher(), schedule):
        arrays = as_numpy({**weights(model), **adam_state(model, opt)})
        raw_full += raw_bytes(arrays)
        settle(work, raw_bytes(arrays))
        ts = durable_torch_save(
            {"model": model.state_dict(), "optimizer": opt.state_dict()}, tdir / f"step{step}.pt"
        )
        os.unlink(tdir / f"step{step}.pt")
        settle(work, raw_bytes(arrays))
        cs, cid = timed(lambda a=arrays, m=f"step {step}": commit_state(full, a, m))
        rs, _ = timed(lambda: full.repack(max_commits=1))
        commits.append(cid)
        digests.append(digest(arrays))
        saves.append(cs)
        torch_saves.append(ts)
        repacks.append(rs)
        a16 = as_numpy(weights(model, torch.bfloat16))
        raw_bf16 += raw_bytes(a16)
        commit_state(bf16, a16, f"step {step}")
        bf16.repack(max_commits=1)
        log(
            f"step {step} loss {loss:.3f}: save {cs:.2f}s (torch.save {ts:.2f}s), repack {rs:.2f}s, "
            f"{time.perf_counter() - t0:.0f}s elapsed, load avg {os.getloadavg()[0]:.1f}"
        )
    stored_full = tree_bytes(work / "full" / ".coral")
    stored_bf16 = tree_bytes(work / "bf16" / ".coral")
    n = len(commits)
    state_mb = raw_full / n / MB
    table.add(
        "full",
        f"{n} fp32 checkpoints {args.every} steps apart, weights + Adam moments ({n_params / 1e6:.1f}M params, "
        f"{state_mb:.0f} MiB each)",
        "<= 78% of raw",
        pct(stored_full / raw_full),
        stored_full / raw_full <= 0.78,
        f"{stored_full / MB:.0f} MiB stored for {raw_full / MB:.0f} MiB raw",
    )
    kinds = stored_by_kind(
        full, commits, lambda k: k.rsplit("/", 1)[-1] if k.startswith("optim/") else "weights"
    )
    table.add(
        "full-kinds",
        "fp32 run by kind (newest kept raw)",
        "info",
        ", ".join(f"{k} {pct(st / raw)}" for k, (st, raw) in sorted(kinds.items()) if raw > MB),
        None,
        "stored / raw of each kind over all checkpoints",
    )
    table.add(
        "bf16",
        f"{n} bf16 weight checkpoints {args.every} steps apart",
        "<= 62% of raw",
        pct(stored_bf16 / raw_bf16),
        stored_bf16 / raw_bf16 <= 0.62,
        f"{stored_bf16 / MB:.0f} MiB stored for {raw_bf16 / MB:.0f} MiB raw",
    )
    table.add(
        "insave",
        "save during training (commit_weights, fsynced) vs durable torch.save, median over checkpoints",
        "info",
        f"{statistics.median([t / c for t, c in zip(torch_saves, saves, strict=True)]):.2f}x",
        None,
        "then repack(max_commits=1) (what CheckpointManager runs after a save) took median "
        f"{statistics.median(repacks):.2f}s",
    )
    return {
        "model": model,
        "opt": opt,
        "full": full,
        "commits": commits,
        "arrays": arrays,
        "params": n_params,
        "digests": digests,
    }


def user_mlp(seed: int = 0) -> Any:
    """The 15M-parameter MLP of issue 25: 256 -> 1024, 14 x (1024 -> 1024, GELU), 1024 -> 64."""
    import torch
    from _workload import IN, OUT

    torch.manual_seed(seed)
    layers: list[Any] = [torch.nn.Linear(IN, 1024), torch.nn.GELU()]
    for _ in range(14):
        layers += [torch.nn.Linear(1024, 1024), torch.nn.GELU()]
    layers.append(torch.nn.Linear(1024, OUT))
    return torch.nn.Sequential(*layers)


def run_user_path(args: argparse.Namespace, work: Path, table: Table) -> None:
    """What the user's loop feels, through the documented API: blocked time per save of
    ``coral.integrations.pytorch.Checkpointer`` (sync, default config; packing runs in the background) against
    ``torch.save`` + fsync of the same model+optimizer state, interleaved; and stored bytes after
    ``repo.wait()`` of 10 fp32 checkpoints (weights + Adam moments, 50 steps apart) through plain
    ``Repository.commit`` and through ``CheckpointManager``."""
    import torch
    from _measure import durable_torch_save, settle, tree_bytes
    from _workload import Teacher, adam_state, as_numpy, parameter_count, train, warmup_cosine, weights
    from coral import Repository
    from coral.integrations.pytorch import Checkpointer, PyTorchIntegration
    from coral.training import CheckpointManager, TrainingState

    # ---- stored bytes: 10 checkpoints 50 steps apart, plain commit and CheckpointManager ----------------
    model = user_mlp()
    n_params = parameter_count(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    every, count = (50, 10) if not args.quick else (20, 3)
    plain = Repository(work / "user-plain", init=True)
    mrepo = Repository(work / "user-manager", init=True)
    mgr = CheckpointManager(mrepo, experiment_name="user")
    raw = 0
    for step, loss in train(model, opt, every * count, every, Teacher(), warmup_cosine(opt, every * count, every)):
        arrays = as_numpy({**weights(model), **adam_state(model, opt)})
        raw += raw_bytes({k: v for k, v in arrays.items() if not k.endswith("/step")})
        plain.stage_weights(arrays)
        plain.commit(f"step {step}")
        state = TrainingState(epoch=0, global_step=step, loss=loss,
                              optimizer_state=PyTorchIntegration.save_optimizer_state(opt))
        mgr.save_checkpoint(PyTorchIntegration.model_to_weights(model), state, force=True)
        log(f"user path: checkpoint at step {step}")
    plain.wait()
    mgr.wait()
    for name, repo in (("plain", plain), ("manager", mrepo)):
        stored = tree_bytes(repo.path / ".coral")
        table.add(
            f"user-bytes-{name}",
            f"{count} fp32 checkpoints {every} steps apart, weights + Adam moments ({n_params / 1e6:.1f}M params), "
            + ("plain Repository.commit" if name == "plain" else "CheckpointManager (default config)")
            + ", after repo.wait()",
            "<= 76% of raw",
            pct(stored / raw),
            stored / raw <= 0.76,
            f"{stored / MB:.0f} MiB stored (whole .coral) for {raw / MB:.0f} MiB raw; packed in the background",
        )
        repo.close()

    # ---- blocked time per save: Checkpointer vs torch.save + fsync, interleaved ------------------------
    model = user_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    ckpt = Checkpointer(model, work / "user-ckpt", "blocked", optimizer=opt, every_n_steps=20)
    tdir = work / "user-torch"
    tdir.mkdir()
    trials = max(5, args.trials)
    nbytes = 3 * 4 * n_params
    ratios, coral_s, torch_s = [], [], []
    for i, (step, loss) in enumerate(train(model, opt, 20 * trials, 20, Teacher())):

        def torch_side(step: int = step) -> float:
            settle(work, nbytes)
            path = tdir / f"step{step}.pt"
            t = durable_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
            path.unlink()
            return t

        def coral_side(step: int = step, loss: float = loss) -> float:
            settle(work, nbytes)
            t = time.perf_counter()
            ckpt.log(0, step, loss=loss)  # the policy saves at every 20th step: this is the save
            return time.perf_counter() - t

        order = (torch_side, coral_side) if i % 2 == 0 else (coral_side, torch_side)
        got = {f.__name__: f() for f in order}
        coral_s.append(got["coral_side"])
        torch_s.append(got["torch_side"])
        ratios.append(got["coral_side"] / got["torch_side"])
        log(f"user path: save at step {step}: Checkpointer {got['coral_side']:.2f}s, "
            f"torch.save {got['torch_side']:.2f}s")
    ckpt.close()
    assert len(ckpt.manager.checkpoint_history) == trials, "the Checkpointer did not save at every trial"
    r = statistics.median(ratios)
    table.add(
        "user-save",
        f"blocked time per save, Checkpointer (sync, default config) vs torch.save + fsync of model+optimizer "
        f"({n_params / 1e6:.1f}M params, AdamW, {nbytes / MB:.0f} MiB)",
        "<= 1.0x",
        f"{r:.2f}x",
        r <= 1.0,
        f"median of {trials} interleaved saves, min {min(ratios):.2f}x max {max(ratios):.2f}x; Checkpointer "
        f"{statistics.median(coral_s):.2f}s, torch.save {statistics.median(torch_s):.2f}s (median)",
    )


def run_constant_lr(args: argparse.Namespace, work: Path, table: Table) -> None:
    """The same run with no schedule (a constant peak learning rate): the hardest case for deltas, shown
    beside the headline figure so the effect of the schedule is visible."""
    import torch
    from _measure import tree_bytes
    from _workload import Teacher, adam_state, as_numpy, make_model, train, weights
    from coral import Repository

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    repo = Repository(work / "constant", init=True)
    raw = 0
    for step, _loss in train(model, opt, args.steps, args.every, Teacher()):
        arrays = as_numpy({**weights(model), **adam_state(model, opt)})
        raw += raw_bytes(arrays)
        commit_state(repo, arrays, f"step {step}")
        repo.repack(max_commits=1)
    repo.close()
    stored = tree_bytes(work / "constant" / ".coral")
    table.add(
        "constant-lr",
        f"the same fp32 run at a constant learning rate {args.lr} (no warm-up or decay)",
        "info",
        pct(stored / raw),
        None,
        f"{stored / MB:.0f} MiB stored for {raw / MB:.0f} MiB raw: weights move the most between checkpoints here",
    )
    shutil.rmtree(work / "constant", ignore_errors=True)


def run_save_throughput(args: argparse.Namespace, work: Path, table: Table, ctx: dict[str, Any]) -> None:
    """Saving a new training state (every tensor changed) into the run's repository vs durable torch.save.

    Each trial perturbs every tensor of the final state (outside the timings), so nothing dedups; torch
    writes the same tensors to a new file. Pairs alternate order; the median pair ratio is reported.
    """
    import torch
    from _measure import durable_torch_save, settle, timed

    repo = ctx["full"]
    nbytes = raw_bytes(ctx["arrays"])
    state: dict[str, np.ndarray] = {}
    counter = [0]

    def fresh_state() -> None:
        counter[0] += 1
        state.clear()
        for k, a in ctx["arrays"].items():
            bump = a.dtype.type(counter[0] * 1e-7) if a.dtype.kind == "f" else 1
            state[k] = np.asarray(a + bump, dtype=a.dtype)  # 0-d arrays stay arrays

    def baseline() -> float:
        settle(work, nbytes)
        path = work / f"tput-{counter[0]}.pt"
        s = durable_torch_save({k: torch.from_numpy(v) for k, v in state.items()}, path)
        path.unlink()
        return s

    def candidate() -> float:
        settle(work, nbytes)
        return timed(lambda: commit_state(repo, state, f"throughput trial {counter[0]}"))[0]

    ratios, bs, cs = [], [], []
    for i in range(args.trials):
        fresh_state()
        order = (baseline, candidate) if i % 2 == 0 else (candidate, baseline)
        t = {f: f() for f in order}
        bs.append(t[baseline])
        cs.append(t[candidate])
        ratios.append(t[baseline] / t[candidate])
    r = {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "baseline_s": statistics.median(bs),
        "candidate_s": statistics.median(cs),
    }
    table.add(
        "save",
        "durable save throughput (fsynced), a new state into the run's repository, vs torch.save + fsync",
        ">= 1.0x",
        f"{r['ratio']:.2f}x",
        r["ratio"] >= 1.0,
        f"Coral {nbytes / r['candidate_s'] / 1e9:.2f} GB/s, torch.save {nbytes / r['baseline_s'] / 1e9:.2f} GB/s "
        f"(median of {args.trials} pairs; per-pair {', '.join(f'{x:.2f}' for x in r['ratios'])})",
    )


def run_load(args: argparse.Namespace, work: Path, table: Table, ctx: dict[str, Any]) -> None:
    """Full load of the newest checkpoint vs torch.load of the same state, paired; plus the oldest for info."""
    import torch
    from _measure import durable_torch_save, paired_ratio, settle, timed
    from coral import Repository

    model, opt, arrays = ctx["model"], ctx["opt"], ctx["arrays"]
    nbytes = raw_bytes(arrays)
    path = work / "newest.pt"
    durable_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    root = work / "full"
    got = Repository(root).load_arrays("HEAD")
    assert set(got) == set(arrays) and all(got[k].tobytes() == arrays[k].tobytes() for k in arrays), (
        "load mismatch"
    )
    del got

    def baseline() -> float:
        s, out = timed(lambda: torch.load(path, weights_only=True))
        del out
        return s

    def candidate() -> float:
        def go() -> dict[str, np.ndarray]:
            with Repository(root) as repo:
                return repo.load_arrays("HEAD")

        s, out = timed(go)
        del out
        return s

    baseline(), candidate()  # warm the page cache for both
    r = paired_ratio(baseline, candidate, args.trials, before=lambda: settle(work, nbytes))
    table.add(
        "load",
        "full load of the newest checkpoint vs torch.load(weights_only=True)",
        ">= 1.5x",
        f"{r['ratio']:.2f}x",
        r["ratio"] >= 1.5,
        f"Coral {nbytes / r['candidate_s'] / 1e9:.2f} GB/s, torch.load {nbytes / r['baseline_s'] / 1e9:.2f} GB/s, "
        f"every chunk hash-checked (median of {args.trials} pairs; "
        f"per-pair {', '.join(f'{x:.2f}' for x in r['ratios'])})",
    )
    def mapped() -> float:
        def go() -> dict[str, np.ndarray]:
            with Repository(root) as repo:
                return repo.load_arrays("HEAD", mmap=True)

        s, out = timed(go)
        del out
        return s

    def torch_mapped() -> float:
        s, out = timed(lambda: torch.load(path, weights_only=True, mmap=True))
        del out
        return s

    m = paired_ratio(baseline, mapped, args.trials, before=lambda: settle(work, nbytes))
    tm = paired_ratio(torch_mapped, mapped, args.trials, before=lambda: settle(work, nbytes))
    table.add(
        "load-mmap",
        "full load of the newest with load_arrays(mmap=True) vs torch.load(weights_only=True)",
        "info",
        f"{m['ratio']:.2f}x",
        None,
        f"Coral {nbytes / m['candidate_s'] / 1e9:.2f} GB/s with every chunk hash-checked through the mapping; "
        f"vs torch.load(mmap=True), which maps and reads nothing: {tm['ratio']:.2f}x "
        f"({nbytes / tm['baseline_s'] / 1e9:.1f} GB/s)",
    )
    oldest = ctx["commits"][0]
    with Repository(root) as repo:
        s, out = timed(lambda: repo.load_arrays(oldest))
    assert digest(out) == ctx["digests"][0], "the oldest checkpoint did not load bit for bit"
    del out
    table.add(
        "load-old",
        "full load of the oldest checkpoint (walks reverse-delta chains)",
        "info",
        f"{nbytes / s / 1e9:.2f} GB/s",
        None,
        f"{s:.2f}s; torch.load of a same-size file takes {r['baseline_s']:.2f}s",
    )
    path.unlink()


def run_finetune(args: argparse.Namespace, work: Path, table: Table, ctx: dict[str, Any]) -> None:
    """Fine-tune with ~90% of weight bytes frozen: per-checkpoint stored bytes and the unchanged-save speed."""
    import torch
    from _measure import durable_torch_save, settle, timed, tree_bytes
    from _workload import Teacher, as_numpy, train, weights
    from coral import Repository

    model = ctx["model"]
    trainable = {f"{len(model) - 3}.fc1.weight", f"{len(model) - 3}.fc2.weight"}  # the last block's matrices
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for n, p in model.named_parameters() if n not in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    repo = Repository(work / "finetune", init=True)
    commits, raw, pairs, coral_ms, torch_ms = [], 0, [], [], []
    for step, loss in train(model, opt, args.steps, args.every, Teacher(seed=7)):
        arrays = as_numpy(weights(model))
        raw += raw_bytes(arrays)
        path = work / f"ft{step}.pt"
        settle(work, raw_bytes(arrays))
        ts = durable_torch_save(model.state_dict(), path)
        path.unlink()
        settle(work, raw_bytes(arrays))
        cs, cid = timed(lambda m=f"finetune step {step}": commit_state(repo, as_numpy(weights(model)), m))
        repo.repack(max_commits=1)
        commits.append(cid)
        if len(commits) > 1:
            pairs.append(ts / cs)
            coral_ms.append(cs * 1e3)
            torch_ms.append(ts * 1e3)
        log(f"fine-tune step {step} loss {loss:.3f}: save {cs * 1e3:.0f} ms, torch.save {ts * 1e3:.0f} ms")
    per = new_bytes_per_commit(repo, commits)
    one_raw = raw / len(commits)
    worst = max(per[1:]) / one_raw
    stored = tree_bytes(work / "finetune" / ".coral")
    table.add(
        "ft-each",
        f"fine-tune, {pct(frozen / total)} of weight bytes frozen: each checkpoint after the first",
        "<= 10% of raw",
        f"max {pct(worst)}",
        worst <= 0.10,
        f"per checkpoint: {', '.join(pct(p / one_raw) for p in per)} (the newest is kept raw, a keyframe)",
    )
    table.add(
        "ft-total",
        "fine-tune: all checkpoints together",
        "<= 20% of raw",
        pct(stored / raw),
        stored / raw <= 0.20,
        f"{stored / MB:.0f} MiB stored for {raw / MB:.0f} MiB raw",
    )
    ratio = statistics.median(pairs)
    table.add(
        "unchanged",
        f"save with {pct(frozen / total)} of tensor bytes unchanged vs durable torch.save",
        ">= 5x",
        f"{ratio:.1f}x",
        ratio >= 5.0,
        f"median over {len(pairs)} fine-tune checkpoints (Coral {statistics.median(coral_ms):.0f} ms, torch.save "
        f"{statistics.median(torch_ms):.0f} ms); per-save {', '.join(f'{x:.1f}' for x in pairs)}",
    )


def run_history(args: argparse.Namespace, work: Path, table: Table) -> None:
    """A repository of N commits (a few tensors change per commit, repacked as saved); time a one-tensor read."""
    from _measure import timed
    from coral import Repository

    rng = np.random.default_rng(0)
    names = [f"layer{i}.weight" for i in range(8)] + [f"layer{i}.bias" for i in range(8)]
    state = {
        n: rng.standard_normal((1024, 1024) if "weight" in n else (1024,)).astype(np.float32) * 0.02
        for n in names
    }
    root = work / "history"
    repo = Repository(root, init=True)
    first, last = [], []
    t0 = time.perf_counter()
    for i in range(args.commits):
        for n in (names[i % 8], names[8 + i % 8]):  # one layer trains per commit
            w = state[n].copy()
            w += rng.standard_normal(w.shape).astype(np.float32) * 1e-4
            state[n] = w
        s, _ = timed(lambda m=f"commit {i}": (commit_state(repo, state, m), repo.repack(max_commits=1)))
        (first if i < 10 else last if i >= args.commits - 10 else []).append(s)
        if (i + 1) % 250 == 0:
            log(f"history: {i + 1} commits, {time.perf_counter() - t0:.0f}s")
    repo.close()
    target = names[0]

    def read(ref: str) -> float:
        def go() -> np.ndarray:
            with Repository(root) as r:
                return r.get_weights(ref, names=[target])[target].data

        s, arr = timed(go)
        assert arr.shape == (1024, 1024)
        return s

    read("HEAD")
    head = statistics.median(read("HEAD") for _ in range(20))
    oldest = f"HEAD~{args.commits - 1}"
    read(oldest)
    old = statistics.median(read(oldest) for _ in range(5))
    table.add(
        "read1",
        f"read one 4 MiB tensor from a repository of {args.commits} commits (open + resolve + read + verify)",
        "< 20 ms",
        f"{head * 1e3:.1f} ms",
        head < 0.020,
        f"from the oldest commit (a delta chain): {old * 1e3:.1f} ms; commit+repack cost: first 10 "
        f"{statistics.median(first) * 1e3:.0f} ms, last 10 {statistics.median(last) * 1e3:.0f} ms "
        "(does not grow with history)",
    )


def run_rss(args: argparse.Namespace, work: Path, table: Table) -> None:
    """Peak RSS of a child process that builds a state of ``--rss-gb`` GB and saves it durably."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(work / "rss"), str(args.rss_gb)],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    state, peak = child["state_bytes"], child["peak_rss"]
    table.add(
        "rss",
        f"peak RSS while saving a {state / 2**30:.1f} GiB state",
        "<= state + 512 MiB (the issue: 512 MB)",
        f"state + {(peak - state) / MB:.0f} MiB",
        peak <= state + 512 * MB,
        f"peak {peak / 2**30:.2f} GiB; before the save {child['before_rss'] / 2**30:.2f} GiB (state + interpreter); "
        f"save took {child['save_s']:.1f}s ({state / child['save_s'] / 1e9:.2f} GB/s)",
    )
    shutil.rmtree(work / "rss", ignore_errors=True)


def _vm_hwm() -> int:
    """This process's peak RSS (VmHWM). ``ru_maxrss`` is not used: Linux carries it across exec, so a child
    would report the size of the (big) benchmark process it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_child(root: str, gb: float) -> None:
    """Child body: build the state tensor by tensor (no temporaries), then save it; print JSON figures."""
    from coral import Repository

    rng = np.random.default_rng(0)
    per = 64 * MB
    count = int(gb * 2**30) // per
    state = {}
    for i in range(count):
        a = np.empty(per // 4, dtype=np.float32)
        rng.standard_normal(out=a, dtype=np.float32)
        a *= 0.02
        state[f"layers.{i}.weight"] = a
    before = _vm_hwm()
    repo = Repository(root, init=True)
    t = time.perf_counter()
    repo.stage_weights(state)
    repo.commit("big state")
    save_s = time.perf_counter() - t
    repo.close()
    peak = _vm_hwm()
    print(
        json.dumps(
            {
                "state_bytes": sum(a.nbytes for a in state.values()),
                "before_rss": before,
                "peak_rss": peak,
                "save_s": save_s,
            }
        )
    )


# ---- main --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: short training, small state, few commits"
    )
    p.add_argument("--steps", type=int, default=500, help="training steps (a checkpoint every --every steps)")
    p.add_argument("--every", type=int, default=50)
    p.add_argument(
        "--lr", type=float, default=1e-3, help="peak AdamW learning rate (PyTorch's default), warm-up + cosine"
    )
    p.add_argument("--trials", type=int, default=7, help="paired timing trials per speed figure")
    p.add_argument("--commits", type=int, default=1000, help="commits in the history repository")
    p.add_argument("--rss-gb", type=float, default=4.0, help="size of the state in the peak-RSS test")
    p.add_argument("--workdir", default=None, help="where the repositories go (default: a temp folder)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--only", default=None, help="comma list of phases: user,train,constant,save,load,finetune,history,rss"
    )
    p.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.every, args.trials, args.commits, args.rss_gb = 60, 20, 3, 60, 0.5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rss_child:
        rss_child(args.rss_child[0], float(args.rss_child[1]))
        return 0
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="coral-bench-", dir=args.workdir))
    phases = set((args.only or "user,train,constant,save,load,finetune,history,rss").split(","))
    table = Table()
    started = time.perf_counter()
    log(f"Coral storage benchmark on {os.cpu_count()} cores, torch {torch.__version__}, work dir {work}")
    try:
        ctx = None
        if phases & {"train", "save", "load", "finetune"}:
            log(
                f"training: {args.steps} AdamW steps (peak lr {args.lr}, warm-up {args.every} steps, cosine decay), "
                f"a checkpoint every {args.every}"
            )
            ctx = run_training(args, work, table)
        if "user" in phases:
            log("the user's path: Checkpointer blocked time, stored bytes after repo.wait()")
            run_user_path(args, work, table)
        if "constant" in phases:
            log("the same run at a constant learning rate (size only)")
            run_constant_lr(args, work, table)
        if ctx and "load" in phases:  # before the save trials add commits on top of the run
            log("load throughput")
            run_load(args, work, table, ctx)
        if ctx and "save" in phases:
            log("save throughput")
            run_save_throughput(args, work, table, ctx)
        if ctx and "finetune" in phases:
            log("fine-tune")
            run_finetune(args, work, table, ctx)
        if "history" in phases:
            log(f"history of {args.commits} commits")
            run_history(args, work, table)
        if "rss" in phases:
            log(f"peak RSS with a {args.rss_gb} GB state")
            run_rss(args, work, table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(table.markdown())
    print(f"\n{len(table.rows)} figures in {elapsed:.0f}s; load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table.rows, "elapsed_s": elapsed}, indent=2))
    return 0 if all(r["ok"] is not False for r in table.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
