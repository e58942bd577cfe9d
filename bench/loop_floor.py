"""Loop floor (issue 25, row S5): what ANY durable async saver costs a loop that checkpoints every 20 steps.

Run ``python bench/loop_floor.py`` (about 10 minutes on two cores; ``--quick`` for a smoke run). The loop is
``bench/save_path.py``'s: the 15.0M-parameter MLP with AdamW (weights + both moments, 172 MiB), 100 steps
per run. Besides no saves and Coral's ``Checkpointer(async_save=True)``, it runs minimal savers that do only
parts of what a durable async save must, with nothing else (no format, no commit, no packing):

- ``copy``: the host copy of every parameter and moment into reused buffers, in a background thread,
  gated before the next ``optimizer.step()`` like Coral's lazy snapshot;
- ``copy+hash``: the same, then BLAKE3 of every 4 MiB piece (what content addressing needs);
- ``write``: the copy, then each 4 MiB piece written to its own file with ``O_DIRECT`` and fsynced, from
  4 threads (no page-cache copy), then the folder fsynced; no hashing. A piece whose size is not a multiple
  of 4 KiB (a tensor's short tail) goes through the page cache, as does everything where ``O_DIRECT`` is
  refused (the table then says so);
- ``write+hash`` and ``write+hash, page cache``: the same with BLAKE3, with ``O_DIRECT`` and through the
  page cache.

Each "kept" figure is the steps/s of a run over the steps/s of the no-save run of the same round, the median
over rounds with min-max (so it need not equal the ratio of the steps/s medians); rounds alternate the order
of the arms. If a minimal saver cannot keep 95% of the steps/s,
no durable saver that hashes what it writes can on this machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PIECE = 4 * 1024 * 1024
ARMS = {
    "none": "no saves",
    "copy": "host copy only (lazy-gated, background)",
    "copy+hash": "host copy + BLAKE3",
    "write": "host copy + write (O_DIRECT) + fsync, no hash",
    "write+hash": "host copy + BLAKE3 + write (O_DIRECT) + fsync",
    "write+hash, page cache": "host copy + BLAKE3 + write through the page cache + fsync",
    "coral": "Coral `Checkpointer(async_save=True)` (default lazy snapshot, background packing)",
}


def state_tensors(model: Any, opt: Any) -> list[Any]:
    """Every parameter and both AdamW moments of each: the 172 MiB a checkpoint of this loop holds."""
    out = [p.detach() for p in model.parameters()]
    for state in opt.state.values():
        out += [state["exp_avg"], state["exp_avg_sq"]]
    return out


class MinimalSaver:
    """The least a durable async save can do: copy (gated before the next step), then hash and/or write."""

    def __init__(self, model: Any, opt: Any, work: Path, *, hash_: bool, write: bool, direct: bool) -> None:
        self.model, self.opt, self.work = model, opt, work
        self.hash_, self.write, self.direct = hash_, write, direct
        self.buffers: list[tuple[mmap.mmap, int]] = []
        self.copied = threading.Event()
        self.copied.set()
        self.thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(4)
        self.count = 0
        self.direct_failed = False
        self.hook = opt.register_step_pre_hook(lambda *_: self.copied.wait() and None)

    def save(self) -> None:
        if self.thread is not None:
            self.thread.join()
        tensors = state_tensors(self.model, self.opt)
        if not self.buffers:  # page-aligned buffers (O_DIRECT needs them), reused from save to save
            for t in tensors:
                n = t.numel() * t.element_size()
                self.buffers.append((mmap.mmap(-1, max(4096, -(-n // 4096) * 4096)), n))
        self.copied.clear()
        self.count += 1
        self.thread = threading.Thread(target=self._background, args=(tensors, self.count))
        self.thread.start()

    def _background(self, tensors: list[Any], count: int) -> None:
        import blake3
        import numpy as np
        import torch

        for t, (buf, n) in zip(tensors, self.buffers, strict=True):
            np.copyto(np.frombuffer(buf, dtype=np.uint8, count=n), t.reshape(-1).view(torch.uint8).numpy())
        self.copied.set()
        folder = self.work / f"save{count}"
        folder.mkdir()
        pieces = [(i, off, min(PIECE, n - off)) for i, (_, n) in enumerate(self.buffers) for off in range(0, n, PIECE)]

        def one(piece: tuple[int, int, int]) -> None:
            i, off, length = piece
            view = memoryview(self.buffers[i][0])[off : off + length]
            if self.hash_:
                blake3.blake3(view, max_threads=1).digest()
            if not self.write:
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            if self.direct and length % 4096 == 0 and not self.direct_failed:
                flags |= os.O_DIRECT
            try:
                fd = os.open(folder / f"{i}-{off}", flags, 0o644)
            except OSError:  # a file system without O_DIRECT (tmpfs): write through the page cache
                self.direct_failed = True
                fd = os.open(folder / f"{i}-{off}", flags & ~os.O_DIRECT, 0o644)
            try:
                os.write(fd, view)
                os.fsync(fd)
            finally:
                os.close(fd)

        list(self.pool.map(one, pieces))
        if self.write:
            fd = os.open(folder, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()
        self.hook.remove()
        self.pool.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", type=Path, help="work folder on the disk to measure (default: a temp folder, removed)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every arm (default 5)")
    p.add_argument("--steps", type=int, default=100, help="training steps per run (default 100)")
    p.add_argument("--every", type=int, default=20, help="save every N steps (default 20)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 20 steps, a save every 10")
    args = p.parse_args(argv)
    for name in ("rounds", "steps", "every"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    if args.work is not None and not args.work.is_dir():
        p.error(f"--work: no such folder: {args.work}")
    if args.quick:
        args.rounds, args.steps, args.every = 1, 20, 10

    import torch
    from _workload import Teacher
    from coral.integrations.pytorch import Checkpointer
    from storage import user_mlp

    torch.manual_seed(0)
    model = user_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    teacher = Teacher()

    def step() -> None:
        x, y = teacher.batch()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # the moments exist before the first timed run
        step()
    state_mib = sum(t.numel() * t.element_size() for t in state_tensors(model, opt)) / 2**20

    root = Path(tempfile.mkdtemp(prefix="coral-loop-floor-", dir=args.work))
    direct_failed = False

    def run(arm: str, work: Path) -> float:
        nonlocal direct_failed
        work.mkdir()
        saver: Any = None
        on_step: Callable[[int], None] = lambda s: None  # noqa: E731
        if arm == "coral":
            saver = Checkpointer(model, work / "repo", "loop", optimizer=opt, every_n_steps=args.every, async_save=True)
            on_step = lambda s: saver.log(0, s)  # noqa: E731
        elif arm != "none":
            saver = MinimalSaver(
                model, opt, work, hash_="hash" in arm, write=arm.startswith("write"), direct="page cache" not in arm
            )
            on_step = lambda s: saver.save() if s % args.every == 0 else None  # noqa: E731
        t = time.perf_counter()
        for s in range(1, args.steps + 1):
            step()
            on_step(s)
        rate = args.steps / (time.perf_counter() - t)
        if saver is not None:
            saver.close()
            if arm == "coral":
                saver.manager.repository.wait()  # untimed: packing is not the next run's
            else:
                direct_failed |= saver.direct_failed
        shutil.rmtree(work)
        return rate

    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    try:
        for r in range(args.rounds):
            order = list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]
            for i, arm in enumerate(order):
                rates[arm].append(run(arm, root / f"r{r}-{i}"))
            print(f"round {r}: " + ", ".join(f"{a} {rates[a][-1]:.2f}" for a in ARMS), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nRun {started}, {state_mib:.0f} MiB state, a save every {args.every} of {args.steps} steps, "
          f"{args.rounds} rounds, load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end"
          + ("; O_DIRECT was refused here, so every write went through the page cache" if direct_failed else ""))
    print("\n| saver | steps/s (median) | kept vs no saves, median (min-max) |\n|---|---|---|")
    for arm, label in ARMS.items():
        kept = [100 * x / b for x, b in zip(rates[arm], rates["none"], strict=True)]
        print(f"| {label} | {statistics.median(rates[arm]):.2f} | "
              f"{statistics.median(kept):.0f}% ({min(kept):.0f}-{max(kept):.0f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
