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


def _batches(lines: list[str]) -> list[tuple[int, list[int]]]:
    return [(int(p[1]), [int(i) for i in p[2:]]) for p in (line.split() for line in lines) if p[:1] == ["batch"]]


def test_sharded_preemption_checkpoint_resumes_mid_epoch_at_the_next_batch(tmp_path: Path) -> None:
    """FSDP2 + DCP: the preemption commit holds rank 0's data position; both ranks resume at the next batch of
    the interrupted epoch, and the two runs together see each epoch's batches exactly once, in order."""
    from coral import Repository
    from torch.utils.data import DistributedSampler

    repo = tmp_path / "repo"
    Repository(repo, init=True)

    def pair(*extra: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
        return tuple(start("dcp_data_run.py", str(repo), *extra, env=env | {"RANK": str(r)}) for r in (0, 1))

    rank0, rank1 = pair()
    try:
        first1 = signal_at_step(rank1, 3, signal.SIGTERM)
        first0 = rank0.communicate(timeout=GUARD_S)[0].splitlines()
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
    assert rank0.returncode == rank1.returncode == 143, "\n".join(first0[-20:] + first1[-20:])
    step = stopped_step(first1)
    assert stopped_step(first0) == step and 4 <= step < 8  # mid-epoch 0 (8 steps per epoch per rank)
    assert preempted_commits(repo)[0]["coral_checkpoint"]["data_state"]["epoch_complete"] is False

    rank0, rank1 = pair("--resume")
    outs = [p.communicate(timeout=GUARD_S)[0].splitlines() for p in (rank0, rank1)]
    assert rank0.returncode == rank1.returncode == 0, "\n".join(outs[0][-20:] + outs[1][-20:])
    for rank, (first, again) in enumerate(((first0, outs[0]), (first1, outs[1]))):
        seen = _batches(first) + _batches(again)
        expected = []
        for epoch in range(2):
            sampler = DistributedSampler(range(64), num_replicas=2, rank=rank, shuffle=True, seed=0)
            sampler.set_epoch(epoch)
            order = list(sampler)
            expected += [(epoch, order[i : i + 4]) for i in range(0, len(order), 4)]
        assert seen == expected, (rank, seen[step - 2 : step + 2], expected[step - 2 : step + 2])
