"""SIGKILL one rank of a 2-rank (gloo) FSDP2 job in the middle of a sharded DCP save, then check and resume.

Each commit the job reported stays readable in full, no commit of the branch is half written (every
tensor of every commit loads, every chunk verified), ``fsck`` finds no damage, and a restarted 2-rank job
resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from coral import Repository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "torch"))
import dist_launch  # noqa: E402


def reported(out: Path) -> list[str]:
    path = out / "reported.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.split()[0] for ln in lines if len(ln.split()) == 2]  # a torn last line is not a report


def run_sharded_save_kill(tmp_path: Path, rng: random.Random, min_saves: int = 2) -> dict[str, Any]:
    """One kill: wait for ``min_saves`` reported saves, SIGKILL rank 1 at a random instant, then rank 0."""
    repo, out = tmp_path / "repo", tmp_path / "out"
    procs = dist_launch.start("kill_saves", 2, repo, out)
    deadline = time.monotonic() + 180
    try:
        while len(reported(out)) < min_saves:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                logs = [p.communicate(timeout=30)[0] if p.poll() is not None else "" for p in procs]
                raise RuntimeError(f"the saving job stopped before {min_saves} saves: {logs}")
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))  # the loop saves every epoch: the kill lands inside a save
        os.kill(procs[1].pid, signal.SIGKILL)
        time.sleep(rng.uniform(0.0, 0.2))
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.communicate()
    failures: list[str] = []
    seen = reported(out)
    r = Repository(repo)
    history = [info.hash for info in r.log()]
    for h in seen:
        if h not in history:
            failures.append(f"reported commit {h[:12]} is not on the branch")
    for h in history:  # every commit is whole: all its tensors load (every chunk BLAKE3-checked)
        try:
            commit = r.get_commit(h)
            if "dcp" not in commit.metadata:
                failures.append(f"commit {h[:12]} has no DCP metadata")
            r.load_arrays(h)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            failures.append(f"commit {h[:12]} unreadable: {exc}")
    fsck = r.fsck()
    if fsck.get("errors"):
        failures.append(f"fsck: {fsck['errors'][:5]}")
    # the restarted job resumes from the newest complete checkpoint, on every rank
    ranks = dist_launch.run("ckpt_dcp_check", 2, repo, tmp_path / "resume")
    newest = history[0] if history else None
    for rep in ranks:
        if rep["resumed"] != newest:
            failures.append(f"rank {rep['rank']} resumed {rep['resumed']} instead of the newest commit {newest}")
    return {"failures": failures, "reported": len(seen), "commits": len(history)}
