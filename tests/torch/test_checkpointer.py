"""Checkpointer: policy from keywords, resume=True/"best" with next-epoch semantics, tracker run status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from coral import Repository
from coral.errors import InvalidArgumentError
from coral.integrations import Tracker
from coral.integrations.pytorch import Checkpointer
from coral.training import CheckpointConfig
from torch import nn


class ListTracker:
    """A complete Tracker that keeps every call (a third-party tracker in miniature)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start_run(self, run_name: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        self.calls.append(("start", run_name, dict(params or {})))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.calls.append(("metrics", dict(metrics), step))

    def log_checkpoint(self, commit_hash: str, step: int | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        self.calls.append(("checkpoint", commit_hash, step))

    def end_run(self, status: str = "completed") -> None:
        self.calls.append(("end", status))


def setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    return model, opt, sched


def train_epoch(model, opt, sched):
    opt.zero_grad()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def test_default_saves_every_epoch_and_epoch_is_the_next_one(tmp_path):
    model, opt, sched = setup()
    ckpt = Checkpointer(model, tmp_path / "r", "e", optimizer=opt, scheduler=sched)
    assert ckpt.epoch == 0 and ckpt.global_step == 0 and ckpt.best_commit is None
    hashes = [ckpt.log(epoch, (epoch + 1) * 10, loss=train_epoch(model, opt, sched)) for epoch in range(3)]
    assert all(hashes) and len(set(hashes)) == 3
    assert ckpt.epoch == 3 and ckpt.global_step == 30 and ckpt.last_commit == hashes[-1]
    assert isinstance(ckpt.repo, Repository) and ckpt.repo.get_commit(hashes[0]).metadata["epoch"] == 0
    assert set(ckpt.metrics) == {"loss"}


def test_resume_latest_restores_exact_state_and_continues_without_repeating(tmp_path):
    model, opt, sched = setup()
    with Checkpointer(model, tmp_path / "r", "e", optimizer=opt, scheduler=sched, every_n_epochs=1) as ckpt:
        for epoch in range(ckpt.epoch, 2):
            ckpt.log(epoch, epoch + 1, loss=train_epoch(model, opt, sched), acc=torch.tensor(0.25))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    expected_next = train_epoch(model, opt, sched)  # what epoch 2 of an uninterrupted run computes

    model2, opt2, sched2 = setup(seed=99)
    ckpt2 = Checkpointer(model2, tmp_path / "r", "e", optimizer=opt2, scheduler=sched2, resume=True)
    assert ckpt2.epoch == 2 and ckpt2.global_step == 2
    assert ckpt2.metrics["acc"] == 0.25 and ckpt2.resumed_from == ckpt.last_commit
    for k, v in model2.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert sched2.last_epoch == 2 and opt2.param_groups[0]["lr"] == pytest.approx(0.05 * 0.9**2)
    assert train_epoch(model2, opt2, sched2) == expected_next  # weights, moments, RNG: all restored
    epochs_run = list(range(ckpt2.epoch, 4))
    assert epochs_run == [2, 3]


def test_resume_on_an_empty_repository_starts_fresh(tmp_path):
    model, opt, _sched = setup()
    ckpt = Checkpointer(model, tmp_path / "r", "e", optimizer=opt, resume=True)
    assert ckpt.epoch == 0 and ckpt.resumed_from is None


def test_resume_best_and_on_best_policy(tmp_path):
    model, opt, sched = setup()
    ckpt = Checkpointer(model, tmp_path / "r", "e", optimizer=opt, on_best="val_loss", minimize=True)
    best_weights = None
    results = {}
    for epoch, v in enumerate([0.9, 0.5, 0.7, 0.6]):
        train_epoch(model, opt, sched)
        results[epoch] = ckpt.log(epoch, epoch, val_loss=v)
        if epoch == 1:
            best_weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert [e for e, h in results.items() if h] == [0, 1]  # only improvements are saved
    assert ckpt.best_commit == results[1]

    model2, opt2, _ = setup(seed=5)
    best = Checkpointer(model2, tmp_path / "r", "e", optimizer=opt2, on_best="val_loss", resume="best")
    assert best.epoch == 2 and best.metrics == {"val_loss": 0.5}
    for k, v in model2.state_dict().items():
        assert torch.equal(v, best_weights[k]), k


def test_maximize_keep_last_keep_best_and_every_n_steps(tmp_path):
    model, _opt, _sched = setup()
    ckpt = Checkpointer(
        model, tmp_path / "r", "e", on_best="acc", minimize=False, every_n_steps=4, keep_last=1, keep_best=1
    )
    saved = {}
    for step, acc in [(1, 0.5), (2, 0.4), (3, 0.45), (4, 0.3), (5, 0.2), (8, 0.1)]:
        saved[step] = ckpt.log(0, step, acc=acc)
    assert [s for s, h in saved.items() if h] == [1, 4, 8]  # first best, then steps 4 and 8
    live = [h["global_step"] for h in ckpt.manager.list_checkpoints() if not h["pruned"]]
    assert live == [1, 8]  # keep_best=1 keeps the best (step 1), keep_last=1 the newest


def test_invalid_arguments(tmp_path):
    model, _opt, _sched = setup()
    with pytest.raises(InvalidArgumentError, match="resume"):
        Checkpointer(model, tmp_path / "r", "e", resume="latest")
    assert Checkpointer(model, tmp_path / "r", "e", keep_best=2).manager.policy.ranking_metric == "loss"  # no metric
    with pytest.raises(InvalidArgumentError, match="tracker"):
        Checkpointer(model, tmp_path / "r", "e", tracker=object())
    with pytest.raises(InvalidArgumentError, match="config"):
        Checkpointer(model, tmp_path / "r", "e", config=CheckpointConfig(), every_n_epochs=2)
    ckpt = Checkpointer(model, tmp_path / "r", "e", config=CheckpointConfig(save_every_n_steps=3))
    assert [s for s in range(1, 7) if ckpt.log(0, s)] == [3, 6]
    with pytest.raises(InvalidArgumentError):
        ckpt.log(-1, 0)
    with pytest.raises(InvalidArgumentError):
        ckpt.log(0, "5")


def test_context_manager_ends_tracker_run_completed(tmp_path):
    model, opt, _sched = setup()
    tracker = ListTracker()
    assert isinstance(tracker, Tracker)
    with Checkpointer(model, tmp_path / "r", "run-ok", optimizer=opt, tracker=tracker) as ckpt:
        assert tracker.calls[0][0] == "start" and tracker.calls[0][1] == "run-ok"
        assert tracker.calls[0][2]["optimizer"] == "Adam"
        h0 = ckpt.log(0, 10, loss=torch.tensor(1.5), note="text")
        h1 = ckpt.log(1, 20, loss=1.0)
    kinds = [c[0] for c in tracker.calls]
    assert kinds == ["start", "metrics", "checkpoint", "metrics", "checkpoint", "end"]
    assert ("metrics", {"loss": 1.5}, 10) in tracker.calls  # non-numeric values are not sent
    assert ("checkpoint", h0, 10) in tracker.calls and ("checkpoint", h1, 20) in tracker.calls
    assert tracker.calls[-1] == ("end", "completed")


def test_context_manager_marks_failed_and_reraises(tmp_path):
    model, _opt, _sched = setup()
    tracker = ListTracker()
    with pytest.raises(RuntimeError, match="diverged"), Checkpointer(model, tmp_path / "r", "run-bad", tracker=tracker) as ckpt:
        ckpt.log(0, 1, loss=2.0)
        raise RuntimeError("loss diverged")
    assert tracker.calls[-1] == ("end", "failed")
    # the checkpoint written before the failure survives and resumes
    model2, _, _ = setup(seed=3)
    assert Checkpointer(model2, tmp_path / "r", "run-bad", resume=True).epoch == 1


def test_forced_save_and_step_none_keeps_the_step(tmp_path):
    model, _opt, _sched = setup()
    ckpt = Checkpointer(model, tmp_path / "r", "e", every_n_epochs=100)
    assert ckpt.log(1, 7) is None  # 1 % 100 != 0
    assert ckpt.log(2) is None and ckpt.global_step == 7
    h = ckpt.save(loss=0.3)
    info = ckpt.manager.get_checkpoint_info(h)
    assert info["epoch"] == 2 and info["global_step"] == 7
    model2, _, _ = setup(seed=1)
    assert Checkpointer(model2, tmp_path / "r", "e", resume=True).epoch == 3

    fresh = Checkpointer(nn.Linear(2, 2), tmp_path / "r2", "e")
    fresh.save()  # before any epoch ran: a resume must start at epoch 0
    assert Checkpointer(nn.Linear(2, 2), tmp_path / "r2", "e", resume=True).epoch == 0
