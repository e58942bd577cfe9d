"""Time from a preemption signal to process exit, for the 21M-parameter benchmark model (issue 33).

    .venv/bin/python bench/preemption.py            # 5 runs: median and min-max, steps lost
    .venv/bin/python bench/preemption.py --runs 1   # to try the script

Each run starts a training process (plain PyTorch loop with Checkpointer, AdamW, bench/_workload.py's model),
waits for its step ``--at`` line, sends SIGTERM and times until the process has exited. The process saves
at the step it reached (weights + AdamW state + RNG, ~250 MB), waits for it and exits 143. "Steps lost" =
the last step the process trained minus the step of its preemption checkpoint (0 when the grace window
covers one step plus one save).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def child(repo: str) -> None:
    import torch
    from _workload import Teacher, make_model
    from coral.integrations.pytorch import Checkpointer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model, teacher = make_model(), Teacher()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with Checkpointer(model, repo, "bench", optimizer=opt, every_n_steps=10**9) as ckpt:
        for step in range(1, 10**9):
            x, y = teacher.batch()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ckpt.log(0, step, loss=float(loss.detach()))
            if ckpt.should_stop:
                print(f"stopped at step {step}", flush=True)
                break
            print(f"step {step}", flush=True)


def one_run(at: int) -> tuple[float, int, int]:
    """(seconds from signal to exit, steps lost, exit code) of one preempted training process."""
    from coral import Repository

    with tempfile.TemporaryDirectory(prefix="coral-preempt-") as tmp:
        repo = Path(tmp) / "repo"
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(repo)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            if line.startswith("step "):
                last = int(line.split()[1])
                if last == at:
                    break
        sent = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)
        rest = proc.stdout.read()
        code = proc.wait()
        elapsed = time.perf_counter() - sent
        for line in rest.splitlines():
            words = line.split()
            if words and words[-1].isdigit():
                last = max(last, int(words[-1]))
        marked = [c for c in Repository(repo).log() if (c.metadata or {}).get("preempted")]
        saved = int(marked[0].metadata["global_step"]) if marked else 0
        return elapsed, last - saved, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--at", type=int, default=3, help="send SIGTERM after this step's line")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    results = [one_run(args.at) for _ in range(args.runs)]
    times = [r[0] for r in results]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"signal -> exit: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}) "
          f"over {len(times)} runs")
    print(f"steps lost: {[r[1] for r in results]}; exit codes: {sorted({r[2] for r in results})}")


if __name__ == "__main__":
    main()
