"""SIGTERM to a real plain-PyTorch training process: it saves at the step it reached, exits 143, resumes bit-exact."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from preempt_helpers import (
    commits,
    frozen_s3_remote,
    preempted_commits,
    run,
    signal_at_step,
    start,
    stopped_step,
)
from safetensors.torch import load_file


def test_sigterm_mid_epoch_saves_that_step_exits_143_and_resumes_bit_exact(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    run("torch_run.py", str(tmp_path / "uninterrupted"), str(full))

    repo, out, marker = tmp_path / "repo", tmp_path / "resumed.safetensors", tmp_path / "user_handler.txt"
    proc = start("torch_run.py", str(repo), str(out), "--sleep", "0.05", "--user-handler", str(marker))
    lines = signal_at_step(proc, 8, signal.SIGTERM)  # epoch 1 of 2, batch 2 of 6: mid-epoch
    assert proc.returncode == 143, "\n".join(lines[-30:])
    stopped = stopped_step(lines)
    assert stopped >= 9
    assert marker.read_text().startswith("user handler ran for 15")  # the handler installed before Coral's
    marks = preempted_commits(repo)
    assert len(commits(repo)) == 1 and len(marks) == 1  # the save policy saved nothing else
    assert marks[0]["global_step"] == stopped and marks[0]["preempted"] == {"signal": "SIGTERM", "step": stopped}
    assert not out.exists()

    resumed = run("torch_run.py", str(repo), str(out))
    assert [x for x in resumed if x.startswith("step ")][0] == f"step {stopped + 1}"  # no step lost, none repeated
    a, b = load_file(full), load_file(out)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


def test_sigterm_with_push_to_s3_the_preemption_checkpoint_is_on_the_remote_when_the_process_exits(
    tmp_path: Path, s3_url: str
) -> None:
    from coral import Repository

    Repository(s3_url, init=True).close()  # the remote: a repository on moto's S3 server
    repo = tmp_path / "repo"
    with Repository(repo, init=True) as local:
        local.add_remote("origin", s3_url)
    out = tmp_path / "out.safetensors"
    proc = start("torch_run.py", str(repo), str(out), "--sleep", "0.05", "--push-to", "origin")
    lines = signal_at_step(proc, 4, signal.SIGTERM)
    assert proc.returncode == 143, "\n".join(lines[-30:])
    marks = [c for c in commits(repo) if (c.metadata or {}).get("preempted")]
    assert len(marks) == 1
    with Repository(s3_url) as remote:  # nothing runs any more: what is there was pushed before the exit
        on_remote = [c for c in remote.log() if c.hash == marks[0].hash]
        assert on_remote and on_remote[0].metadata["preempted"] == {"signal": "SIGTERM", "step": stopped_step(lines)}
        assert remote.fsck()["ok"]



def test_a_push_that_hangs_past_preemption_deadline_does_not_hold_the_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote's S3 server is frozen: the push never ends, so the process must stop at the deadline with exit
    code 143 and its local preemption commit, saying what did not make it, not wait in close() or at exit."""
    repo = tmp_path / "repo"
    with frozen_s3_remote(repo, monkeypatch):
        proc = start("torch_run.py", str(repo), str(tmp_path / "out.safetensors"), "--push-to", "origin",
                     "--deadline", "2")
        try:
            lines = signal_at_step(proc, 3, signal.SIGTERM)  # its hang guard fails the test if the exit waits on
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = "\n".join(lines)
        assert proc.returncode == 143, text[-3000:]
        assert len(preempted_commits(repo)) == 1  # the local commit is complete
        assert "did not finish within preemption_deadline=2s" in text and "lost" not in text
