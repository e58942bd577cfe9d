"""Time from a preemption signal to process exit, for the 21M-parameter benchmark model, with and without a
push to an S3 remote (issue 33).

    .venv/bin/python bench/preemption.py            # 5 runs each way, interleaved: < 5 min on 2 quiet cores
    .venv/bin/python bench/preemption.py --runs 1   # to try the script (about 1 min)

Each run starts a training process (plain PyTorch loop with Checkpointer, AdamW, bench/_workload.py's model),
waits for its step ``--at`` line, sends SIGTERM and times until the process has exited. The process saves
at the step it reached (weights + AdamW state + RNG, ~250 MB), waits for it and exits 143. With push, the
local repository has a remote ``origin`` on a moto S3 server (started here, on 127.0.0.1, with
``coral.testing.s3``; a fresh bucket per run) and the Checkpointer has ``push_to="origin"``: the process
returns only after the push finished (bounded by ``preemption_deadline``, 90 s). After the exit the bench
opens the remote and checks that the preemption commit is on it. "Steps lost" = the last step the process
trained minus the step of its preemption checkpoint (0 when the grace window covers one step plus one save).
Runs alternate without/with push; the table gives the median and min-max of each and their ratio.
Run time: the default 5 pairs took 316 s at load average 17.5 on 2 shared cores (one pair: 52 s at load
11), so well under 5 min on a quiet 2-core machine; a child still running ``--guard`` seconds
(default 150) after its signal is killed, so a stalled run cannot hang the bench.
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
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def child(repo: str, push_to: str | None) -> None:
    import torch
    from _workload import Teacher, make_model
    from coral.integrations.pytorch import Checkpointer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model, teacher = make_model(), Teacher()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with Checkpointer(model, repo, "bench", optimizer=opt, every_n_steps=10**9, push_to=push_to) as ckpt:
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


def one_run(at: int, guard: float, remote: str | None) -> dict[str, Any]:
    """Seconds from signal to exit, steps lost, exit code and (with ``remote``) whether the preemption commit
    is on the remote, for one preempted training process."""
    from coral import Repository

    with tempfile.TemporaryDirectory(prefix="coral-preempt-") as tmp:
        repo = Path(tmp) / "repo"
        cmd = [sys.executable, __file__, "--child", str(repo)]
        if remote is not None:
            Repository(remote, init=True).close()
            with Repository(repo, init=True) as local:
                local.add_remote("origin", remote)
            cmd += ["--push-to", "origin"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            if line.startswith("step "):
                last = int(line.split()[1])
                if last == at:
                    break
        sent = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=guard)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        elapsed = time.perf_counter() - sent
        code = proc.returncode
        for line in rest.splitlines():
            words = line.split()
            if words and words[-1].isdigit():
                last = max(last, int(words[-1]))
        marked = [c for c in Repository(repo).log() if (c.metadata or {}).get("preempted")]
        saved = int(marked[0].metadata["global_step"]) if marked else 0
        on_remote = None
        if remote is not None:
            with Repository(remote) as r:
                on_remote = bool(marked) and any(c.hash == marked[0].hash for c in r.log())
        return {"s": elapsed, "lost": last - saved if marked else None, "code": code, "on_remote": on_remote}


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--push-to", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=5, help="runs each way (without / with push), interleaved")
    ap.add_argument("--at", type=int, default=3, help="send SIGTERM after this step's line")
    ap.add_argument("--guard", type=float, default=150.0, help="kill a child still running this long after the signal")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.push_to)
        return

    import logging

    import requests
    from coral.testing.s3 import create_bucket, moto_endpoint, s3_environment

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    plain: list[dict[str, Any]] = []
    pushed: list[dict[str, Any]] = []
    loads: list[float] = []
    started = time.perf_counter()
    with moto_endpoint() as endpoint:
        os.environ.update(s3_environment(endpoint))  # the children inherit it: boto3/s3fs talk to moto
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(var, None)
        for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            os.environ[var] = os.devnull
        for i in range(args.runs):
            plain.append(one_run(args.at, args.guard, None))
            loads.append(os.getloadavg()[0])
            requests.post(f"{endpoint}/moto-api/reset", timeout=30)  # moto keeps objects in memory: free them
            pushed.append(one_run(args.at, args.guard, f"s3://{create_bucket(endpoint)}/repo"))
            loads.append(os.getloadavg()[0])
            print(f"run {i + 1}/{args.runs}: no push {plain[-1]}, push {pushed[-1]}", file=sys.stderr, flush=True)
    total = time.perf_counter() - started

    t_plain, t_push = [r["s"] for r in plain], [r["s"] for r in pushed]
    ratio = statistics.median(t_push) / statistics.median(t_plain)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{statistics.median(loads):.1f} (min {min(loads):.1f}, max {max(loads):.1f}) during the run; "
          f"{args.runs} runs each way, interleaved; {total:.0f} s in all.\n")
    print("| what | without push | with push (`push_to`, moto S3 on 127.0.0.1) |")
    print("| --- | --- | --- |")
    print(f"| signal -> exit, median (min-max) | {summary(t_plain)} | {summary(t_push)} ({ratio:.2f}x) |")
    print(f"| steps lost | {[r['lost'] for r in plain]} | {[r['lost'] for r in pushed]} |")
    print(f"| exit code | {sorted({r['code'] for r in plain})} | {sorted({r['code'] for r in pushed})} |")
    n_on = sum(bool(r["on_remote"]) for r in pushed)
    print(f"| preemption commit on the remote after exit | - | {n_on} of {len(pushed)} runs |")


if __name__ == "__main__":
    main()
