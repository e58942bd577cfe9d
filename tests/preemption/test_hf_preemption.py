"""SIGTERM to a real transformers.Trainer run with CoralTrainerCallback: commit at the step reached, exit 143,
``resume_from_coral`` resumes bit-exact."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from preempt_helpers import preempted_commits, run, signal_at_step, start  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def test_sigterm_mid_epoch_commits_exits_143_and_resume_from_coral_is_bit_exact(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    run("hf_run.py", str(tmp_path / "uninterrupted"), str(full))

    repo, out = tmp_path / "repo", tmp_path / "resumed.safetensors"
    proc = start("hf_run.py", str(repo), str(out), "--sleep", "0.1")
    lines = signal_at_step(proc, 10, signal.SIGTERM)  # epoch 2 of 2 (8 steps each): mid-epoch
    assert proc.returncode == 143, "\n".join(lines[-30:])
    marks = preempted_commits(repo)
    assert len(marks) == 1 and marks[0]["preempted"]["signal"] == "SIGTERM"
    saved = marks[0]["global_step"]
    assert saved >= 10 and f"step {saved + 1}" not in lines
    assert not out.exists()

    resumed = run("hf_run.py", str(repo), str(out), "--resume")
    assert [x for x in resumed if x.startswith("step ")][0] == f"step {saved + 1}"
    a, b = load_file(full), load_file(out)
    assert a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
