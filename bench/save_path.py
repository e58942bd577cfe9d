"""What a PyTorch training loop feels when it saves through Coral's ``Checkpointer``, against its peers.

Run ``python bench/save_path.py`` (one command, about 4-6 minutes on two cores, bounded by ``--budget``
seconds for the timed phases, default 420; ``--quick`` for a smoke run). Model: the 15M-parameter MLP of
issue 25 (bench/storage.py ``user_mlp``) with AdamW, batch 64, real forward/backward/step between saves.
Every figure is measured in this run, interleaved with its peer (A,B,B,A,...), median with min-max:

1. sync: blocked time of ``Checkpointer.save`` (default config) / ``torch.save`` + fsync of the same
   model+optimizer state (``settle()`` before each side: warm pages, nothing left to flush), and the disk's
   floor for those bytes (``disk_floor``: written as 4 MiB files and fsynced from Coral's writer threads);
2. async: blocked seconds per GB of state of ``Checkpointer(async_save=True)`` (lazy snapshot: the time in
   ``save`` plus any wait of the next ``optimizer.step()`` for the copy; and ``snapshot="copy"``) against
   ``torch.distributed.checkpoint.async_save`` (one process, a gloo group of one), each followed by the
   same training steps so the background competes for the CPU as it would in training;
3. steps/s of a loop checkpointing every 20 steps (async, lazy) / the same loop without checkpoints,
   while it trains (the rate a long job keeps) and with the job's final ``close()`` wait for its last save
   included (what a short run of ``--loop-steps`` pays once);
4. peak RSS of the process during the async runs (VmHWM, and above the RSS before them).
The load average during the run is printed with the table (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
GB = 1e9
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[save_path {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))})"


class RssPeak:
    """Samples VmRSS every 5 ms in a thread: the peak of the process while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __enter__(self) -> RssPeak:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def disk_floor(model: Any, opt: Any, folder: Path, repo: Any) -> float:
    """Seconds to write the model + optimizer state's bytes as 4 MiB files, each fsynced, then the folder,
    from as many threads as Coral's writer uses: what this disk takes for the bytes alone (no hashing, no
    copy, no format). A durable save of this state cannot block for less."""
    import concurrent.futures as cf

    import torch

    tensors = list(model.state_dict().values()) + [
        v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor) and v.dim()
    ]
    views = []
    for t in tensors:
        raw = t.detach().contiguous().view(-1).view(torch.uint8).numpy().data
        views.extend(raw[o : o + 4 * MB] for o in range(0, len(raw), 4 * MB))
    folder.mkdir(parents=True)

    def write(item: tuple[int, memoryview]) -> None:
        fd = os.open(folder / str(item[0]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = item[1]
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(int(repo.objects.threads)) as ex:
        list(ex.map(write, enumerate(views)))
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    took = time.perf_counter() - t
    shutil.rmtree(folder)
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 trials, short loops")
    p.add_argument("--trials", type=int, default=5, help="saves per side in the sync and async phases")
    p.add_argument("--loop-steps", type=int, default=100, help="steps per run of the steps/s phase (5 saves)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds; later phases stop early past it")
    p.add_argument("--work", default=None, help="work folder (default: a temp folder, removed at the end)")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.loop_steps = 2, 40

    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from _measure import durable_torch_save, settle
    from coral.integrations.pytorch import Checkpointer
    from storage import user_mlp

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    work = Path(args.work or tempfile.mkdtemp(prefix="coral-save-path-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load0 = os.getloadavg()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)

    model = user_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 256, generator=gen), torch.randn(64, 64, generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    step()
    n_params = sum(q.numel() for q in model.parameters())
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + sum(
        v.numel() * v.element_size()
        for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)
    )
    gbs = state_bytes / GB
    rows: list[tuple[str, str, str, str, str]] = []
    log(f"{n_params / 1e6:.1f}M params, state {state_bytes / MB:.0f} MiB, load average {load0}")

    # ---- 1. sync Checkpointer vs torch.save + fsync ---------------------------------------------------------
    sync = Checkpointer(model, work / "sync", "sync", optimizer=opt, every_n_steps=10**9)
    tdir = work / "torch"
    tdir.mkdir()
    sync.save(0, step=0)  # warm-up, not timed: the first save loads the plugins and captures the environment
    sync.manager.wait()
    durable_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tdir / "warm.pt")
    ratios, c_s, t_s, f_s = [], [], [], []
    for i in range(args.trials):
        step()

        def torch_side(i: int = i) -> float:
            settle(work, state_bytes)
            path = tdir / f"s{i}.pt"
            t = durable_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
            path.unlink()
            return t

        def coral_side(i: int = i) -> float:
            settle(work, state_bytes)
            t = time.perf_counter()
            sync.save(0, step=i)
            return time.perf_counter() - t

        def floor_side(i: int = i) -> float:
            settle(work, state_bytes)
            return disk_floor(model, opt, work / "floor" / str(i), sync.manager.repository)

        sides: tuple[Callable[[], float], ...] = (coral_side, torch_side, floor_side)
        got = {f.__name__: f() for f in (sides if i % 2 == 0 else sides[::-1])}
        c_s.append(got["coral_side"])
        t_s.append(got["torch_side"])
        f_s.append(got["floor_side"])
        ratios.append(got["coral_side"] / got["torch_side"])
        log(f"sync {i}: Checkpointer {got['coral_side']:.3f}s torch.save {got['torch_side']:.3f}s "
            f"disk floor {got['floor_side']:.3f}s")
        sync.manager.repository.wait()  # the packer's work is not the next save's
    sync.close()
    shutil.rmtree(work / "floor", ignore_errors=True)
    rows.append((
        "sync save / torch.save+fsync", "<= 1.0x (#25), <= 0.5x (#32)", med(ratios) + "x",
        f"Checkpointer {med(c_s, '{:.3f}')} s, torch.save+fsync {med(t_s, '{:.3f}')} s", f"{args.trials} pairs",
    ))
    rows.append((
        "disk floor / torch.save+fsync", "information", med([f / t for f, t in zip(f_s, t_s, strict=True)]) + "x",
        f"the state's bytes as 4 MiB files, each written and fsynced from "
        f"{sync.manager.repository.objects.threads} threads (no hashing, "
        f"no copy, no format): {med(f_s, '{:.3f}')} s; Checkpointer / floor "
        f"{med([c / f for c, f in zip(c_s, f_s, strict=True)])}x", f"{args.trials} runs",
    ))

    # ---- 2. async blocked time per GB: lazy, copy, DCP async_save ------------------------------------------
    lazy = Checkpointer(model, work / "lazy", "lazy", optimizer=opt, every_n_steps=10**9, async_save=True)
    copy = Checkpointer(model, work / "copy", "copy", optimizer=opt, every_n_steps=10**9, async_save=True,
                        snapshot="copy")
    lazy_gate: list[float] = []
    untimed = lazy.manager.wait_snapshot

    def timed_wait(timeout: float | None = None) -> bool:  # what the step pre-hook waits, timed
        t = time.perf_counter()
        done = untimed(timeout)
        lazy_gate.append(time.perf_counter() - t)
        return done

    lazy.manager.wait_snapshot = timed_wait  # type: ignore[method-assign]
    blocked: dict[str, list[float]] = {"lazy": [], "copy": [], "dcp": []}
    pending_dcp: list[Any] = []
    for ck in (lazy, copy):  # warm-up, not timed (the first save of a Checkpointer allocates its buffers)
        ck.save(0, step=0)
        step()
        ck.manager.wait()
    dcp.async_save({"model": model.state_dict(), "optim": opt.state_dict()},
                   checkpoint_id=str(work / "dcp" / "warm")).result()
    rss0 = RssPeak.now()
    between = 5  # training steps after each save: the background competes with them

    def coral_async(ck: Checkpointer, key: str, i: int) -> None:
        ck.manager.wait()  # the previous save is not this one's cost
        lazy_gate.clear()
        t = time.perf_counter()
        ck.save(0, step=i)
        took = time.perf_counter() - t
        for _ in range(between):
            step()
        blocked[key].append(took + (sum(lazy_gate) if key == "lazy" else 0.0))

    def dcp_async(i: int) -> None:
        for fut in pending_dcp:
            fut.result()
        pending_dcp.clear()
        t = time.perf_counter()
        fut = dcp.async_save({"model": model.state_dict(), "optim": opt.state_dict()},
                             checkpoint_id=str(work / "dcp" / f"s{i}"))
        took = time.perf_counter() - t
        pending_dcp.append(fut)
        for _ in range(between):
            step()
        blocked["dcp"].append(took)

    with RssPeak() as rss:
        for i in range(args.trials):
            if time.monotonic() - started > args.budget * 0.6:
                log("async phase: budget reached, stopping early")
                break
            sides = [lambda i=i: coral_async(lazy, "lazy", i), lambda i=i: coral_async(copy, "copy", i),
                     lambda i=i: dcp_async(i)]
            for side in sides if i % 2 == 0 else sides[::-1]:
                side()
            log(f"async {i}: lazy {blocked['lazy'][-1]:.4f}s copy {blocked['copy'][-1]:.4f}s "
                f"dcp {blocked['dcp'][-1]:.4f}s")
        lazy.manager.wait()
        copy.manager.wait()
        for fut in pending_dcp:
            fut.result()
    lazy.close()
    copy.close()
    for key, label in (("lazy", "Checkpointer(async_save=True) lazy"), ("copy", 'snapshot="copy"'),
                       ("dcp", "DCP async_save")):
        per_gb = [b / gbs for b in blocked[key]]
        rows.append((f"async blocked s/GB, {label}", "<= 0.05 (#32), <= 0.1 (#25)" if key == "lazy" else "peer",
                     med(per_gb, "{:.3f}"), f"{med(blocked[key], '{:.4f}')} s per save", f"{len(per_gb)} saves"))
    lz = statistics.median(blocked["lazy"]) / statistics.median(blocked["dcp"])
    rows.append(("lazy / DCP async_save blocked", "< 1x", f"{lz:.2f}x", "ratio of medians", ""))
    rows.append(("peak RSS during the async runs", "reported", f"{rss.peak / MB:.0f} MiB",
                 f"+{(rss.peak - rss0) / MB:.0f} MiB above the RSS before them ({rss0 / MB:.0f} MiB); "
                 f"state {state_bytes / MB:.0f} MiB; three savers (lazy, copy, DCP) alive", ""))

    # ---- 3. steps/s: checkpoint every 20 steps (async lazy) vs none ----------------------------------------
    def loop(with_ckpt: bool, run: int) -> tuple[float, float]:
        """(steps/s while training, steps/s with the job's final wait for its last save included)."""
        ck = None
        if with_ckpt:
            ck = Checkpointer(model, work / f"loop{run}", "loop", optimizer=opt, every_n_steps=20, async_save=True)
        t = time.perf_counter()
        for s in range(1, args.loop_steps + 1):
            step()
            if ck is not None:
                ck.log(0, s)
        trained = time.perf_counter() - t
        if ck is not None:
            ck.close()  # the job's end waits for its last save
        rates = args.loop_steps / trained, args.loop_steps / (time.perf_counter() - t)
        if ck is not None:
            ck.manager.repository.wait()  # untimed: its folder is removed next, and packing is not the next run's
        return rates

    # on a loaded machine a step can take seconds: size the loop to what the budget leaves (>= 20 steps)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    per_step = (time.perf_counter() - t0) / 3
    left = args.budget - (time.monotonic() - started)
    args.loop_steps = max(20, min(args.loop_steps, int(left / (4 * 1.2 * per_step)) // 20 * 20))
    # pairs of adjacent runs, as many as the budget holds (2..8): this VM's speed drifts by +-25% over minutes,
    # so the median of many short pairs says more than one long pair
    pairs = 1 if args.quick else max(2, min(8, int(left / (2 * 1.2 * per_step * args.loop_steps))))
    log(f"loop phase: {per_step:.2f} s per step, {pairs} pairs of {args.loop_steps} steps per run")

    fractions, ends, with_s, without_s = [], [], [], []
    for run in range(pairs):
        if time.monotonic() - started > args.budget:
            log("loop phase: budget reached, stopping early")
            break
        got: dict[bool, tuple[float, float]] = {}
        for flag in (True, False) if run % 2 == 0 else (False, True):
            got[flag] = loop(flag, run)
        with_s.append(got[True][0])
        without_s.append(got[False][1])
        fractions.append(got[True][0] / got[False][1])
        ends.append(got[True][1] / got[False][1])
        log(f"loop {run}: with {got[True][0]:.2f} steps/s ({got[True][1]:.2f} with the final wait), "
            f"without {got[False][1]:.2f} steps/s")
        shutil.rmtree(work / f"loop{run}", ignore_errors=True)
    if fractions:
        rows.append(("steps/s, checkpoint every 20 steps (async lazy) / none", ">= 95%",
                     med([f * 100 for f in fractions], "{:.0f}") + "%",
                     f"with {med(with_s)} steps/s, without {med(without_s)} steps/s; the job's final wait for "
                     f"its last save included: {med([e * 100 for e in ends], '{:.0f}')}%",
                     f"{len(fractions)} pairs of {args.loop_steps} steps"))

    load1 = os.getloadavg()
    dist.destroy_process_group()
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{n_params / 1e6:.1f}M-param MLP + AdamW, {state_bytes / MB:.0f} MiB of state, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; load average at start {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, "
          f"at end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}; {time.monotonic() - started:.0f} s\n")
    print("| Figure | Target | Measured (median, min-max) | Detail | Runs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
