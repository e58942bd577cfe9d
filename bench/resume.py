"""Resume benchmark (issue 25): load the newest checkpoint into model + optimizer, Coral against torch.load.

Run ``python bench/resume.py`` (about 2-3 minutes on two cores; ``--quick`` for a smoke run). The state is
issue 25's: a 15.0M-parameter MLP with AdamW (weights + both moments, 172 MiB), three checkpoints 20 steps
apart saved through ``coral.integrations.pytorch.Checkpointer`` (the older two packed in the background, the
newest raw), and the same model+optimizer state written once with ``torch.save``.

- cold: a NEW process per load, the page cache dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``, needs
  root; ``--cold evict`` evicts only the checkpoint files) just before it starts, bytecode caches on (one
  untimed run of each side first writes them). Coral's side is the documented resume, ``Checkpointer(model, path, name,
  optimizer=opt, resume=True)``, timed from before ``import coral.integrations.pytorch`` (Coral's import is
  part of its cost) to the model and optimizer restored; torch's side is ``torch.load(weights_only=True)`` +
  ``model.load_state_dict`` + ``optimizer.load_state_dict``. Both children import torch and build the model
  and optimizer before their timer starts. Runs alternate torch, coral, coral, torch, ...
- warm: the same two loads in this process, files in the page cache, interleaved.

Every Coral read is BLAKE3-checked against its chunk id. Each child prints a digest of the restored model and
optimizer state; the parent checks that both sides restored the same bits. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

EXPERIMENT = "resume"
MB = 1024 * 1024


def build(lr: float = 1e-3) -> tuple[Any, Any]:
    """Issue 25's model and its AdamW optimizer (fresh: the state to restore comes from the checkpoint)."""
    import torch
    from storage import user_mlp

    model = user_mlp()
    return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)


def state_digest(model: Any, opt: Any) -> str:
    """SHA-256 over every tensor of the model and the optimizer state, in a fixed order (bits, not values)."""
    import torch

    h = hashlib.sha256()

    def feed(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            h.update(prefix.encode())
            h.update(value.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                feed(f"{prefix}/{k}", value[k])
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                feed(f"{prefix}/{i}", v)
        else:
            h.update(f"{prefix}={value!r}".encode())

    feed("model", model.state_dict())
    feed("optim", opt.state_dict()["state"])
    return h.hexdigest()


def torch_resume(work: Path, model: Any, opt: Any) -> None:
    import torch

    sd = torch.load(work / "state.pt", weights_only=True)
    model.load_state_dict(sd["model"])
    opt.load_state_dict(sd["optimizer"])


def coral_resume(work: Path, model: Any, opt: Any) -> None:
    from coral.integrations.pytorch import Checkpointer

    ckpt = Checkpointer(model, work / "repo", EXPERIMENT, optimizer=opt, every_n_steps=20, resume=True)
    if ckpt.resumed_from is None:
        raise SystemExit("the Checkpointer did not resume")
    ckpt.close()


def child(side: str, work: Path) -> None:
    """One cold load in this fresh process; prints JSON with the seconds and the restored state's digest."""
    model, opt = build()
    t = time.perf_counter()
    (coral_resume if side == "coral" else torch_resume)(work, model, opt)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "digest": state_digest(model, opt)}), flush=True)


def drop_caches(work: Path, how: str) -> None:
    """Empty the page cache: all of it (``drop``: ``echo 3 > /proc/sys/vm/drop_caches``, needs root), or only
    the checkpoint files' pages (``evict``: ``posix_fadvise(DONTNEED)`` on every file under ``work``)."""
    os.sync()
    if how == "drop":
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    for folder, _dirs, files in os.walk(work):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_child(side: str, work: Path, how: str) -> dict[str, Any]:
    drop_caches(work, how)
    # as a user's process runs: with bytecode caches (this machine's environment turns them off)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--work", str(work)], capture_output=True, text=True,
        check=False, env=env,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{side} child failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["wall"] = wall
    return got


def prepare(work: Path, quick: bool) -> tuple[int, str]:
    """Train, save three checkpoints through Checkpointer (packed in the background) and one torch.save."""
    import torch
    from _workload import Teacher, train
    from coral.integrations.pytorch import Checkpointer

    model, opt = build()
    ckpt = Checkpointer(model, work / "repo", EXPERIMENT, optimizer=opt, every_n_steps=20)
    for step, loss in train(model, opt, 20 if quick else 60, 20, Teacher()):
        ckpt.log(0, step, loss=loss)
    ckpt.close()  # waits for background packing: the older checkpoints are re-encoded, the newest stays raw
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, work / "state.pt")
    return (work / "state.pt").stat().st_size, state_digest(model, opt)


def ratio_row(
    label: str, target: float, coral: list[float], torch_: list[float], note: str = ""
) -> tuple[str, bool]:
    ratios = [t / c for c, t in zip(coral, torch_, strict=True)]
    r = statistics.median(ratios)
    ok = r >= target
    row = (
        f"| {label} | >= {target}x | {r:.2f}x | {'pass' if ok else '**miss**'} | median of {len(ratios)} pairs, "
        f"min {min(ratios):.2f}x max {max(ratios):.2f}x; Coral {statistics.median(coral):.3f} s, torch "
        f"{statistics.median(torch_):.3f} s (medians){note} |"
    )
    return row, ok


def floors(work: Path, how: str, trials: int) -> list[str]:
    """What this machine allows any loader that checks every byte: the CPU cost of the checks and of one memory
    copy (on random bytes of the state's size: hashing and copying speed do not depend on the content), and how
    fast the disk gives the same bytes cold as one file or as the newest checkpoint's chunk files."""
    import concurrent.futures as cf

    import blake3
    import numpy as np
    import xxhash

    state = work / "state.pt"
    from coral import Repository

    with Repository(work / "repo") as repo:  # the newest checkpoint's chunk files: what a resume reads
        ids = {cid for entry in repo.get_commit("HEAD").tree.values() for cid in entry.chunks}
        chunks = [repo.store.root / "objects" / "chunks" / cid[:2] / cid[2:] for cid in sorted(ids)]
    n = state.stat().st_size
    data = np.frombuffer(np.random.default_rng(0).bytes(n), dtype=np.uint8)
    dest = np.ones_like(data)

    def timed(fn: Any) -> list[float]:
        out = []
        for _ in range(trials):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    def read_files(files: list[Path], threads: int) -> int:
        def one(path: Path) -> int:
            with open(path, "rb", buffering=0) as fh:
                return len(fh.read())

        with cf.ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(one, files))

    def cold_rate(files: list[Path], threads: int) -> list[float]:
        rates = []
        for _ in range(trials):
            drop_caches(work, how)
            t = time.perf_counter()
            got = read_files(files, threads)
            rates.append(got / (time.perf_counter() - t) / 1e9)
        return rates

    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"

    def gbs(xs: list[float]) -> str:
        return f"{statistics.median(xs):.2f} GB/s ({min(xs):.2f}-{max(xs):.2f})"

    chunk_bytes = sum(c.stat().st_size for c in chunks)
    return [
        f"| BLAKE3 of the {n / MB:.0f} MiB, one thread | {ms(timed(lambda: blake3.blake3(data).digest()))} |",
        f"| BLAKE3, two threads | {ms(timed(lambda: blake3.blake3(data, max_threads=2).digest()))} |",
        f"| xxh3 (the store's seal) | {ms(timed(lambda: xxhash.xxh3_64(data).digest()))} |",
        f"| one copy of it in memory (into touched pages) | {ms(timed(lambda: np.copyto(dest, data)))} |",
        f"| cold read of `state.pt` ({n / MB:.0f} MiB, one file), 1 thread | {gbs(cold_rate([state], 1))} |",
        f"| cold read of the checkpoint's chunk files ({len(chunks)} files, {chunk_bytes / MB:.0f} MiB), 1 thread "
        f"| {gbs(cold_rate(chunks, 1))} |",
        f"| the same, 4 threads | {gbs(cold_rate(chunks, 4))} |",
        f"| the same, 16 threads | {gbs(cold_rate(chunks, 16))} |",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", choices=["coral", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--trials", type=int, default=7, help="pairs per figure (default 7, at least 5 counted)")
    ap.add_argument("--quick", action="store_true", help="smoke run: one checkpoint, 2 pairs")
    ap.add_argument(
        "--floors", action="store_true",
        help="also measure this machine's floors: BLAKE3, xxh3 and one memory copy of a buffer of the state's size "
        "(random bytes: their speed does not depend on the content), and cold reads of state.pt against the newest "
        "checkpoint's chunk files, emptied from the page cache as --cold says (--cold none: evicted)",
    )
    ap.add_argument(
        "--cold", choices=["drop", "evict", "none"], default="drop",
        help="before each cold run: drop the whole page cache (default, needs root), evict only the checkpoint "
        "files (kinder to a shared machine), or skip the cold runs",
    )
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.work)
        return 0
    trials = 2 if args.quick else max(5, args.trials)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="coral-resume-", dir=args.work) as tmp:
        work = Path(tmp)
        size, want = prepare(work, args.quick)
        print(f"state: {size / MB:.0f} MiB; load average {load0:.1f}", flush=True)
        rows, ok = [], True
        if args.cold != "none":
            for side in ("torch", "coral"):  # untimed: writes the bytecode caches a user's install has
                run_child(side, work, "evict")
            cold: dict[str, list[float]] = {"coral": [], "torch": []}
            walls: dict[str, list[float]] = {"coral": [], "torch": []}
            for i in range(trials):
                for side in ("torch", "coral") if i % 2 == 0 else ("coral", "torch"):
                    got = run_child(side, work, args.cold)
                    if got["digest"] != want:
                        raise SystemExit(f"{side} restored different bits than were saved")
                    cold[side].append(got["seconds"])
                    walls[side].append(got["wall"])
                    print(f"  cold {side}: {got['seconds']:.3f} s (process {got['wall']:.2f} s)", flush=True)
            cache = "whole page cache dropped" if args.cold == "drop" else "checkpoint files evicted from page cache"
            row, good = ratio_row(
                f"resume in a NEW process, cold ({cache}): `Checkpointer(..., resume=True)` (model + AdamW, "
                "`import coral` included) vs `torch.load(weights_only=True)` + `load_state_dict` x2",
                1.3, cold["coral"], cold["torch"],
                f"; whole process {statistics.median(walls['coral']):.2f} s vs "
                f"{statistics.median(walls['torch']):.2f} s",
            )
            rows.append(row)
            ok &= good
        model, opt = build()
        coral_resume(work, model, opt)  # imports and first-touch costs out of the timed runs
        torch_resume(work, model, opt)
        warm: dict[str, list[float]] = {"coral": [], "torch": []}
        for i in range(trials):
            for side in ("torch", "coral") if i % 2 == 0 else ("coral", "torch"):
                model, opt = build()
                t = time.perf_counter()
                (coral_resume if side == "coral" else torch_resume)(work, model, opt)
                warm[side].append(time.perf_counter() - t)
                if state_digest(model, opt) != want:
                    raise SystemExit(f"{side} restored different bits than were saved")
        row, good = ratio_row(
            "resume in the same process, warm page cache (same two loads)", 1.5, warm["coral"], warm["torch"]
        )
        rows.append(row)
        ok &= good
        floor_rows = floors(work, "evict" if args.cold == "none" else args.cold, trials) if args.floors else []
    load1 = os.getloadavg()[0]
    print(f"\nRun {started}, {size / MB:.0f} MiB state, load average {load0:.1f} at start, {load1:.1f} at end\n")
    print("| Requirement | Target | Measured | Result | Notes |\n|---|---|---|---|---|")
    print("\n".join(rows))
    if floor_rows:
        print("\nFloors (median of the same number of runs, min-max):\n\n| Figure | Measured |\n|---|---|")
        print("\n".join(floor_rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
