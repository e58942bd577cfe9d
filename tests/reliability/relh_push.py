"""SIGKILL a process while it pushes to a remote (a folder, or any store URL: s3:// on moto), at random instants,
then check the remote.

After every kill the remote is readable (fsck finds no damage; its branch names the old head or the new one,
never a missing commit), and running the push again completes it: the remote then holds every commit,
bit-exact. Run as a script it is the child: ``python relh_push.py LOCAL`` pushes ``main`` to ``origin``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from coral import Repository
from relh_crash import kill, wait_line

SELF = Path(__file__).resolve()


def grow(repo: Repository, rng: np.random.Generator, commits: int, mib: int = 6) -> None:
    """Add ``commits`` checkpoints of ``mib`` MiB each (a changing part and a frozen part)."""
    frozen = np.random.default_rng(0).standard_normal(mib * 1024 * 128).astype(np.float32)
    for _ in range(commits):
        repo.commit_weights({"frozen": frozen, "moving": rng.standard_normal(mib * 1024 * 128).astype(np.float32)},
                            "checkpoint")


def check_remote(where: str | Path, allowed_heads: set[str | None]) -> list[str]:
    with Repository(where) as remote:
        problems = [f"fsck: {e}" for e in remote.fsck()["errors"]]
        head = remote.head_commit()
        if head not in allowed_heads:
            problems.append(f"remote main is {head}, neither the old nor the new head")
        for info in remote.log():
            remote.load_arrays(info.hash)  # every commit the branch reaches loads (verified)
    return problems


def run_push_kills(
    tmp: Path, kills: int, rng: random.Random, window: float = 0.6, remote_url: str | None = None, mib: int = 6
) -> dict[str, Any]:
    """``kills`` rounds: 3 new checkpoints of ``mib`` MiB, a child pushing them killed at a random instant within
    ``window`` s, the remote checked, the push run again and the remote checked again."""
    remote_at: str | Path = remote_url or tmp / "remote"
    Repository(remote_at, init=True).close()
    local = Repository(tmp / "local", init=True)
    local.add_remote("origin", remote_at)
    data_rng = np.random.default_rng(rng.randrange(2**31))
    failures: list[str] = []
    killed = finished = 0
    for _ in range(kills):
        grow(local, data_rng, 3, mib)
        with Repository(remote_at) as before:
            old = before.head_commit()
        new = local.head_commit()
        child = subprocess.Popen([sys.executable, str(SELF), str(tmp / "local")], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        wait_line(child, "ready")
        time.sleep(rng.uniform(0.0, window))
        outcome = kill(child)
        killed += outcome == "killed"
        finished += outcome == "finished"
        failures += check_remote(remote_at, {old, new})
        result = local.push()  # the retry completes what the killed push began
        failures += check_remote(remote_at, {new})
        with Repository(remote_at) as remote:
            for info in local.log():
                a, b = local.load_arrays(info.hash), remote.load_arrays(info.hash)
                if any(a[k].tobytes() != b[k].tobytes() for k in a):
                    failures.append(f"commit {info.hash[:12]} differs on the remote")
        if result.bytes and outcome == "finished":
            failures.append("a finished push left something to send")
    local.close()
    return {"failures": failures, "killed": killed, "finished": finished}


def child(local: str) -> None:
    with Repository(local) as repo:
        print("ready", flush=True)
        repo.push("origin")
        print("done", flush=True)


if __name__ == "__main__":
    child(sys.argv[1])
