"""Exact resume in a NEW process, and multi-process (DDP) runs where only global rank 0 commits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from coral import Repository
from coral_lightning import CoralCallback
from pytorch_lightning.callbacks import EarlyStopping


def _run(app_path: Path, *args: str, timeout: int = 300) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(app_path), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _result(out: Path, rank: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(out / f"rank{rank}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((out / f"rank{rank}.json").read_text())


def test_two_plus_two_epochs_in_a_new_process_equal_four_bit_for_bit(app, app_path, tmp_path) -> None:
    straight, first = tmp_path / "straight", tmp_path / "first"
    assert app.main(["--repo", str(tmp_path / "r4"), "--max-epochs", "4", "--out", str(straight)]) == 0
    assert app.main(["--repo", str(tmp_path / "r"), "--max-epochs", "2", "--out", str(first)]) == 0
    # the one line a user writes: trainer.fit(model, ..., ckpt_path="coral://last"), here in a fresh interpreter
    resumed = tmp_path / "resumed"
    _run(app_path, "--repo", str(tmp_path / "r"), "--max-epochs", "4", "--resume", "coral://last", "--out", str(resumed))

    want, want_info = _result(straight)
    got, got_info = _result(resumed)
    assert sorted(want) == sorted(got) and any(k.startswith("opt/") for k in want)
    for name in want:
        assert want[name].dtype == got[name].dtype and want[name].tobytes() == got[name].tobytes(), name
    for key in ("global_step", "current_epoch", "lr", "sched"):
        assert want_info[key] == got_info[key], key
    # and the interrupted run did not already match: resuming really continued from epoch 2
    mid, _ = _result(first)
    assert mid["w/net.0.weight"].tobytes() != want["w/net.0.weight"].tobytes()

    repo = Repository(tmp_path / "r")
    log = list(reversed(repo.log(branch="run")))
    assert [c.metadata["epoch"] for c in log] == [1, 2, 3, 4]
    assert [c.metadata["lightning"]["resumed_from"] for c in log] == [None, None, log[1].hash, log[1].hash]
    assert got_info["last_commit_hash"] == log[-1].hash


def test_loader_with_its_own_generator_three_plus_three_epochs_equal_six(app_path, tmp_path) -> None:
    # DataLoader(..., generator=g) shuffles from g, not the global RNG: the commit must carry g's state
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    common = ("--loader-seed", "99")
    _run(app_path, "--repo", str(tmp_path / "r6"), "--max-epochs", "6", "--out", str(straight), *common)
    _run(app_path, "--repo", str(tmp_path / "r"), "--max-epochs", "3", "--out", str(first), *common)
    _run(app_path, "--repo", str(tmp_path / "r"), "--max-epochs", "6", "--resume", "coral://last",
         "--out", str(resumed), *common)
    want, want_info = _result(straight)
    got, got_info = _result(resumed)
    assert sorted(want) == sorted(got)
    for name in want:
        assert want[name].dtype == got[name].dtype and want[name].tobytes() == got[name].tobytes(), name
    for key in ("global_step", "current_epoch"):
        assert want_info[key] == got_info[key], key
    repo = Repository(tmp_path / "r")
    head = repo.log(branch="run")[0]
    assert any(n.startswith("data/loaders/") for n in repo.get_commit(head.hash).tree)


def test_callback_state_is_committed_after_the_monitoring_callbacks(app, tmp_path) -> None:
    # EarlyStopping checked at train-epoch end runs after the module's hook; Coral must commit its updated state
    def fit(callbacks, max_epochs, scores, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        train, val = app.loaders()
        trainer = app.trainer(callbacks, tmp_path / "root", max_epochs)
        trainer.fit(app.ScriptedModule(scores), train, val, ckpt_path=ckpt_path)

    es = EarlyStopping(monitor="score", patience=5, check_on_train_epoch_end=True)
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="es")
    fit([cb, es], 3, [1.0, 2.0, 3.0])
    assert es.wait_count == 2

    es2 = EarlyStopping(monitor="score", patience=5, check_on_train_epoch_end=True)
    cb2 = CoralCallback(repo_path=tmp_path / "r", branch="es")
    fit([cb2, es2], 3, [1.0, 2.0, 3.0], ckpt_path="coral://last")
    assert es2.wait_count == 2 and torch.equal(es2.best_score, es.best_score)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_only_rank_zero_commits_and_every_rank_gets_the_hash(app_path, tmp_path) -> None:
    out = tmp_path / "ddp"
    _run(app_path, "--repo", str(tmp_path / "r"), "--max-epochs", "2", "--devices", "2", "--out", str(out), timeout=400)
    (_, rank0), (_, rank1) = _result(out, 0), _result(out, 1)
    assert (rank0["rank"], rank1["rank"], rank0["world_size"]) == (0, 1, 2)
    repo = Repository(tmp_path / "r")
    log = list(reversed(repo.log(branch="run")))
    assert len(log) == 2  # one commit per epoch: rank 1 committed nothing
    assert rank0["last_commit_hash"] == rank1["last_commit_hash"] == log[-1].hash
    meta = log[-1].metadata
    assert meta["lightning"]["world_size"] == 2 and meta["global_step"] == 8  # 64 samples / 2 ranks / batch 8
    tree = repo.get_commit(log[-1].hash).tree
    assert {n.split("/")[2] for n in tree if n.startswith("rng/__per_rank__/")} == {"0", "1"}


def test_resume_line_on_a_first_run_starts_fresh(app, tmp_path) -> None:
    fresh, first = tmp_path / "fresh", tmp_path / "first"
    assert app.main(["--repo", str(tmp_path / "a"), "--max-epochs", "1", "--out", str(fresh)]) == 0
    # the same script with the resume line, before any checkpoint exists: a warning, then a normal fit
    assert app.main(["--repo", str(tmp_path / "b"), "--max-epochs", "1", "--resume", "coral://last", "--out", str(first)]) == 0
    want, _ = _result(fresh)
    got, _ = _result(first)
    assert want.keys() == got.keys()
    assert all(want[k].tobytes() == got[k].tobytes() for k in want)
    assert len(Repository(tmp_path / "b").log()) == len(Repository(tmp_path / "a").log()) >= 1
