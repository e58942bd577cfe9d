"""Training against moto's real S3 server, in real processes (tests/torch/resume_script.py, a Checkpointer run):

* a repository living on S3 directly (``repo_path`` an ``s3://`` URL, no local repository): 3 epochs, exit,
  3 more in a new process resumed from S3, bit-identical to 6 epochs in one local run;
* ``push_to="origin"`` with origin on S3: each checkpoint pushed in the background; ``clone --depth 1`` on a
  "new machine" resumes from it bit-identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coral import Repository
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "torch" / "resume_script.py"


def start(*args: str | Path) -> subprocess.Popen:
    env = dict(os.environ, CORAL_PLUGINS="torch", OMP_NUM_THREADS="1")  # the S3 endpoint comes from s3_env
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out


def identical(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return all(x[k].dtype == y[k].dtype and x[k].numpy().tobytes() == y[k].numpy().tobytes() for k in x)


def test_runs_on_s3_directly_and_pushing_to_s3_resume_bit_exact_in_new_processes(tmp_path, s3_bucket):
    direct = f"s3://{s3_bucket}/runs/direct"  # the run's own repository, on S3
    remote = f"s3://{s3_bucket}/remotes/origin"  # a remote the local run pushes to
    Repository(remote, init=True).close()
    with Repository(tmp_path / "trainer", init=True) as repo:
        repo.add_remote("origin", remote)
    finish(
        start(tmp_path / "full", tmp_path / "full.st", "--stop", 6),
        start(direct, tmp_path / "direct-half.st", "--stop", 3),
        start(tmp_path / "trainer", tmp_path / "pushed-half.st", "--stop", 3, "--push-to", "origin"),
    )
    assert not identical(tmp_path / "full.st", tmp_path / "direct-half.st")
    with Repository(direct) as on_s3:
        assert len(on_s3.log()) == 3 and on_s3.fsck()["ok"] and on_s3.store.describe().startswith("s3://")
    with Repository(remote) as pushed, Repository(tmp_path / "trainer") as trainer:
        assert len(pushed.log()) == 3 and pushed.fsck()["ok"]  # wait() waited for every background push
        assert pushed.head_commit() == trainer.head_commit() == trainer.resolve("origin/main")
    Repository.clone(remote, tmp_path / "new-machine", depth=1).close()
    finish(
        start(direct, tmp_path / "direct-resumed.st", "--stop", 6),
        start(tmp_path / "new-machine", tmp_path / "clone-resumed.st", "--stop", 6),
    )
    assert identical(tmp_path / "full.st", tmp_path / "direct-resumed.st")
    assert identical(tmp_path / "full.st", tmp_path / "clone-resumed.st")


EXIT_WITHOUT_WAIT = """
import sys, torch
from coral.integrations.pytorch import Checkpointer
model = torch.nn.Linear(8, 8)
options = {"push_to": "origin"} if sys.argv[2] == "push" else {"async_save": True}
ckpt = Checkpointer(model, sys.argv[1], "exp", optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    every_n_epochs=1, **options)
for epoch in range(2):
    ckpt.log(epoch, epoch, loss=1.0)
# no close() or wait(): the exit handlers finish the pending save or push
"""


def exit_without_wait(repo: str | Path, mode: str) -> None:
    env = dict(os.environ, CORAL_PLUGINS="torch", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_WAIT, str(repo), mode], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "failed" not in done.stderr, done.stderr


def test_a_push_to_s3_still_pending_at_exit_is_finished_by_the_exit_handler(tmp_path, s3_bucket):
    # it ran after concurrent.futures' exit hook, so the HTTP client refused the work and nothing arrived
    remote = f"s3://{s3_bucket}/remotes/exit"
    Repository(remote, init=True).close()
    with Repository(tmp_path / "trainer", init=True) as repo:
        repo.add_remote("origin", remote)
    exit_without_wait(tmp_path / "trainer", "push")
    with Repository(remote) as pushed, Repository(tmp_path / "trainer") as trainer:
        assert len(pushed.log()) == 2 and pushed.head_commit() == trainer.head_commit()


def test_an_async_save_into_s3_still_pending_at_exit_is_finished_by_the_exit_handler(s3_bucket):
    # the same: the last async save failed with 'cannot schedule new futures after shutdown'
    direct = f"s3://{s3_bucket}/runs/exit-async"
    exit_without_wait(direct, "async")
    with Repository(direct) as on_s3:
        assert len(on_s3.log()) == 2 and on_s3.fsck()["ok"]
