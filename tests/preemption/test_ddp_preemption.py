"""A 2-rank gloo run where only rank 1 gets SIGTERM: both ranks stop at the same step with one commit, marked
``preempted`` (``coral log`` shows it), on the DDP path and on the sharded DCP path (FSDP2)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from preempt_helpers import GUARD_S, commits, preempted_commits, signal_at_step, start, stopped_step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("mode", ["ddp", "dcp"])
def test_signal_to_rank_1_only_stops_both_ranks_at_the_same_step_with_one_commit(tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    from coral import Repository

    Repository(repo, init=True)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    extra = ["--dcp"] if mode == "dcp" else []
    rank0 = start("ddp_run.py", str(repo), *extra, env=env | {"RANK": "0"})
    rank1 = start("ddp_run.py", str(repo), *extra, env=env | {"RANK": "1"})
    try:
        lines1 = signal_at_step(rank1, 4, signal.SIGTERM)
        out0, _ = rank0.communicate(timeout=GUARD_S)
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
    lines0 = out0.splitlines()
    assert rank1.returncode == 143 and rank0.returncode == 143, "\n".join(lines0[-20:] + lines1[-20:])
    step = stopped_step(lines1)
    assert stopped_step(lines0) == step >= 5
    marks = preempted_commits(repo)
    assert len(commits(repo)) == 1 and len(marks) == 1
    assert marks[0]["global_step"] == step and marks[0]["preempted"]["signal"] == "SIGTERM"
    if mode == "dcp":
        assert marks[0]["coral_checkpoint"]["sharded"]
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("coral")), "log"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert "[preempted]" in shown, shown
