"""SIGTERM to a real pl.Trainer fit with CoralCallback: commit at the step reached, exit 143, resume bit-exact."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("pytorch_lightning")
from preempt_helpers import preempted_commits, run, signal_at_step, start  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def test_sigterm_mid_epoch_commits_exits_143_and_coral_last_resumes_bit_exact(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    run("lightning_run.py", str(tmp_path / "uninterrupted"), str(full))

    repo, out = tmp_path / "repo", tmp_path / "resumed.safetensors"
    proc = start("lightning_run.py", str(repo), str(out), "--sleep", "0.1", "--resume", "coral://last")
    lines = signal_at_step(proc, 11, signal.SIGTERM)  # epoch 1 of 2 (8 batches each): mid-epoch
    assert proc.returncode == 143, "\n".join(lines[-30:])
    marks = preempted_commits(repo)
    assert len(marks) == 1 and marks[0]["preempted"]["signal"] == "SIGTERM"
    saved = marks[0]["global_step"]
    assert saved >= 11 and f"step {saved + 1}" not in lines  # saved at the step it reached, then stopped
    assert not out.exists()

    resumed = run("lightning_run.py", str(repo), str(out), "--resume", "coral://last")
    assert [x for x in resumed if x.startswith("step ")][0] == f"step {saved + 1}"
    a, b = load_file(full), load_file(out)
    assert a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
