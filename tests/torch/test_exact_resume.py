"""Exact resume in a NEW process: 6 epochs in one run == 3 epochs, exit, 3 more in another process.

AdamW, a cosine schedule, dropout, a shuffling DataLoader, python/numpy randomness in the loss: the final
weights must match bit for bit, which needs the optimizer, scheduler, every RNG and the data order restored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from coral import Repository
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("resume_script.py")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["CORAL_PLUGINS"] = "torch"  # only coral-torch (and the built-ins): keeps each process start fast
    e["OMP_NUM_THREADS"] = "1"
    return e


def start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out


def identical(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) and x[k].numpy().tobytes() == y[k].numpy().tobytes()
               for k in x)


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    finish(start(full, tmp_path / "full.st", "--stop", 6), start(part, tmp_path / "half.st", "--stop", 3))
    shutil.copytree(part, tmp_path / "nodata")
    finish(
        start(part, tmp_path / "resumed.st", "--stop", 6),
        # control: the same resume without the data order restored must NOT match (proves the test can fail)
        start(tmp_path / "nodata", tmp_path / "nodata.st", "--stop", 6, "--no-data-state"),
    )
    assert not identical(tmp_path / "full.st", tmp_path / "half.st")
    assert identical(tmp_path / "full.st", tmp_path / "resumed.st")
    assert not identical(tmp_path / "full.st", tmp_path / "nodata.st")


def test_resume_mid_epoch_with_resumable_loader_is_bit_identical(tmp_path):
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    mid = ("--mid-epoch", 2, "--resumable", "--total", 3)  # a checkpoint per batch; "crash" after batch 2 of epoch 1
    finish(start(ref, tmp_path / "ref.st", "--stop", 99, *mid), start(crash, tmp_path / "crash.st", "--stop", 1, *mid))
    finish(start(crash, tmp_path / "resumed.st", "--stop", 99, *mid))
    assert identical(tmp_path / "ref.st", tmp_path / "resumed.st")


# push while training, resume on a "new machine": the run pushes each checkpoint to a folder remote in the
# background; a fresh ``clone --depth 1`` of that remote resumes and ends bit-identical to an uninterrupted run
def test_run_pushing_to_a_remote_resumes_bit_exact_from_a_fresh_clone(tmp_path):
    Repository(tmp_path / "remote", init=True).close()
    with Repository(tmp_path / "trainer", init=True) as repo:
        repo.add_remote("origin", tmp_path / "remote")
    finish(
        start(tmp_path / "full", tmp_path / "full.st", "--stop", 6),
        start(tmp_path / "trainer", tmp_path / "half.st", "--stop", 3, "--push-to", "origin"),
    )
    with Repository(tmp_path / "remote") as remote:
        assert len(remote.log()) == 3 and remote.fsck()["ok"]  # every checkpoint arrived; wait() waited for pushes
        with Repository(tmp_path / "trainer") as trainer:
            assert remote.head_commit() == trainer.head_commit() == trainer.resolve("origin/main")
    Repository.clone(tmp_path / "remote", tmp_path / "new-machine", depth=1).close()
    finish(start(tmp_path / "new-machine", tmp_path / "resumed.st", "--stop", 6))
    assert not identical(tmp_path / "full.st", tmp_path / "half.st")
    assert identical(tmp_path / "full.st", tmp_path / "resumed.st")
