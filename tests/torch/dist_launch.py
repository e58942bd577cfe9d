"""Start N real ranks of ``dist_worker.py`` (gloo on CPU, torchrun-style environment, a free port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).resolve().parent / "dist_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    scenario: str, world: int, repo: Path, out: Path, extra_env: dict[str, str] | None = None
) -> list[subprocess.Popen]:
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", **(extra_env or {}))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), scenario, str(repo), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def run(scenario: str, world: int, repo: Path, out: Path, timeout: float = 180) -> list[dict]:
    """Run every rank to the end; returns each rank's report (rank order); fails with the ranks' output."""
    procs = start(scenario, world, repo, out)
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    if any(p.returncode for p in procs):
        codes = [p.returncode for p in procs]
        raise AssertionError(f"{scenario} on {world} ranks failed (exit codes {codes}):\n" + "\n----\n".join(logs[-2:]))
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
