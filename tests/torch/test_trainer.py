"""CoralTrainer: step and epoch saves, scheduler stepping, callbacks, loading latest/hash/best."""

from __future__ import annotations

import logging

import pytest
import torch
from coral import Repository
from coral.errors import InvalidArgumentError, PrunedCommitError
from coral.integrations.pytorch import CoralTrainer
from coral.training import CheckpointConfig
from torch import nn


def make(tmp_path, config=None, name="exp", sched=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    trainer = CoralTrainer(model, Repository(tmp_path / "repo", init=True), name, config)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    trainer.set_optimizer(opt)
    if sched:
        trainer.set_scheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    return model, opt, trainer


def train_batch(model, opt):
    opt.zero_grad()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    return loss


def test_step_counts_records_metrics_and_saves_only_on_the_step_rule(tmp_path):
    model, opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_steps=3, save_every_n_epochs=5))
    seen = []
    trainer.add_callback("step_end", lambda t: seen.append(t.global_step))
    hashes = [trainer.step(loss=train_batch(model, opt), accuracy=torch.tensor(0.5)) for _ in range(7)]
    assert trainer.global_step == 7 and seen == list(range(1, 8))
    assert trainer.training_metrics == {"loss": pytest.approx(trainer.training_metrics["loss"]), "accuracy": 0.5}
    assert isinstance(trainer.training_metrics["loss"], float)
    # epoch 0 satisfies "epoch % 5 == 0" the whole epoch long: steps must not save for it
    assert [i + 1 for i, h in enumerate(hashes) if h] == [3, 6]
    assert [c["global_step"] for c in trainer.list_checkpoints()] == [3, 6]


def test_epoch_end_steps_scheduler_before_saving_and_fires_callbacks(tmp_path):
    model, opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_epochs=2))
    events = []
    trainer.add_callback("epoch_end", lambda t: events.append(("epoch", t.current_epoch, opt.param_groups[0]["lr"])))
    trainer.add_callback("checkpoint_save", lambda t, h: events.append(("save", t.current_epoch, h)))
    saved = []
    for epoch in range(4):
        trainer.step(loss=train_batch(model, opt))
        saved.append(trainer.epoch_end(epoch))
    assert [bool(h) for h in saved] == [True, False, True, False]
    assert events[0] == ("epoch", 0, 0.1)  # callbacks run before the scheduler steps
    assert ("save", 0, saved[0]) in events and ("save", 2, saved[2]) in events
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    # the checkpoint of epoch 2 holds the scheduler as stepped at the end of epoch 2 (3 steps)
    sched_state = Repository(tmp_path / "repo").get_commit(saved[2]).metadata
    assert sched_state["epoch"] == 2
    trainer.load_checkpoint(saved[2])
    assert trainer.scheduler.last_epoch == 3 and opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert trainer.start_epoch == 3


def test_metric_rule_saves_only_improvements_and_load_best(tmp_path):
    config = CheckpointConfig(save_on_best_metric="val_accuracy", minimize_metric=False)
    model, opt, trainer = make(tmp_path, config)
    accs = [0.5, 0.7, 0.6, 0.9, 0.8]
    weights_at = {}
    for epoch, acc in enumerate(accs):
        train_batch(model, opt)
        trainer.step(loss=1.0 - acc)
        trainer.update_metrics(val_accuracy=acc)
        h = trainer.epoch_end(epoch)
        if h:
            weights_at[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    assert sorted(weights_at) == [0, 1, 3]
    summary = trainer.get_training_summary()
    assert summary["best_metric_value"] == 0.9 and summary["total_checkpoints"] == 3
    assert summary["best_checkpoint"] == trainer.list_checkpoints(only_best=True)[-1]["commit_hash"]
    assert summary["current_epoch"] == 4 and summary["global_step"] == 5
    assert summary["metrics"]["val_accuracy"] == 0.8
    train_batch(model, opt)
    trainer.load_checkpoint(load_best=True)
    assert trainer.current_epoch == 3 and trainer.global_step == 4
    assert trainer.training_metrics["val_accuracy"] == 0.9
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights_at[3][k]), k


def test_save_checkpoint_force_and_policy(tmp_path):
    _model, _opt, trainer = make(tmp_path, CheckpointConfig(), sched=False)
    assert trainer.save_checkpoint() is None  # no rule in the config: nothing is due
    h = trainer.save_checkpoint(force=True)
    assert h and trainer.list_checkpoints()[-1]["commit_hash"] == h


def test_load_checkpoint_restores_everything_and_is_exact(tmp_path):
    model, opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_epochs=1))
    for epoch in range(2):
        trainer.step(loss=train_batch(model, opt))
        trainer.epoch_end(epoch)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    opt_saved = opt.state_dict()
    # what the uninterrupted run does next
    expected_draw = torch.rand(5)
    expected_loss = train_batch(model, opt).item()
    # a second trainer in the same repo (a restart) picks it up
    torch.manual_seed(123)
    model2 = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    trainer2 = CoralTrainer(model2, tmp_path / "repo", "exp", CheckpointConfig(save_every_n_epochs=1))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    trainer2.set_optimizer(opt2)
    trainer2.set_scheduler(torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5))
    h = trainer2.load_checkpoint()
    assert h == trainer.list_checkpoints()[-1]["commit_hash"]
    assert (trainer2.current_epoch, trainer2.global_step, trainer2.start_epoch) == (1, 2, 2)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert opt2.state_dict()["param_groups"] == opt_saved["param_groups"]
    assert torch.equal(torch.rand(5), expected_draw)  # RNG restored to the moment of the save
    assert train_batch(model2, opt2).item() == expected_loss  # same weights, moments, input and dropout mask


def test_load_checkpoint_without_optimizer_or_scheduler_and_by_short_hash(tmp_path):
    model, opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_epochs=1))
    trainer.step(loss=train_batch(model, opt))
    first = trainer.epoch_end(0)
    lr_after_first = opt.param_groups[0]["lr"]
    trainer.step(loss=train_batch(model, opt))
    trainer.epoch_end(1)
    lr_now = opt.param_groups[0]["lr"]
    assert trainer.load_checkpoint(commit_hash=first[:8], load_optimizer=False, load_scheduler=False) == first
    assert opt.param_groups[0]["lr"] == lr_now and trainer.scheduler.last_epoch == 2
    trainer.load_checkpoint(commit_hash=first)
    assert opt.param_groups[0]["lr"] == lr_after_first and trainer.scheduler.last_epoch == 1


def test_load_checkpoint_on_an_empty_experiment_returns_none(tmp_path):
    _model, _opt, trainer = make(tmp_path)
    assert trainer.load_checkpoint() is None
    assert trainer.current_epoch == 0 and trainer.global_step == 0 and trainer.start_epoch == 0


def test_reduce_on_plateau_is_stepped_with_the_watched_metric(tmp_path):
    model = nn.Linear(4, 2)
    trainer = CoralTrainer(model, tmp_path / "r", "plateau", CheckpointConfig(save_on_best_metric="val_loss"))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer.set_optimizer(opt)
    trainer.set_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5))
    for epoch, v in enumerate([1.0, 1.0, 1.0]):
        trainer.update_metrics(val_loss=v)
        trainer.epoch_end(epoch)
    assert opt.param_groups[0]["lr"] == 0.25
    t2 = CoralTrainer(nn.Linear(4, 2), tmp_path / "r", "plateau2")
    o2 = torch.optim.SGD(t2.model.parameters(), lr=1.0)
    t2.set_optimizer(o2)
    t2.set_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(o2))
    with pytest.raises(InvalidArgumentError, match="loss"):
        t2.epoch_end(0)


def test_callbacks_validation_and_failing_save_callback_is_logged(tmp_path, caplog):
    _model, _opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_epochs=1), sched=False)
    with pytest.raises(InvalidArgumentError, match="event"):
        trainer.add_callback("batch_end", lambda t: None)
    with pytest.raises(InvalidArgumentError):
        trainer.add_callback("epoch_end", "not callable")

    def broken(trainer, commit_hash):
        raise RuntimeError("webhook down")

    trainer.add_callback("checkpoint_save", broken)
    with caplog.at_level(logging.ERROR):
        h = trainer.epoch_end(0)
    assert h and "webhook down" in caplog.text
    trainer.add_callback("epoch_end", lambda t: (_ for _ in ()).throw(ValueError("user bug")))
    with pytest.raises(ValueError, match="user bug"):
        trainer.epoch_end(1)


def test_retention_and_early_stopping(tmp_path):
    config = CheckpointConfig(
        save_every_n_epochs=1, save_on_best_metric="val_loss", keep_last_n_checkpoints=2,
        keep_best_n_checkpoints=1, early_stopping_patience=2,
    )
    _model, _opt, trainer = make(tmp_path, config, sched=False)
    for epoch, v in enumerate([0.5, 0.4, 0.45, 0.46, 0.47]):
        trainer.update_metrics(val_loss=v)
        trainer.epoch_end(epoch)
    assert [c["epoch"] for c in trainer.list_checkpoints()] == [1, 3, 4]  # best (epoch 1) + the last two
    history = trainer.manager.checkpoint_history
    assert [c["epoch"] for c in history if c["pruned"]] == [0, 2]  # only in the history, marked
    assert trainer.should_stop_early
    with pytest.raises(PrunedCommitError):
        trainer.load_checkpoint(history[0]["commit_hash"])


def test_trainer_accepts_a_path_and_validates_arguments(tmp_path):
    t = CoralTrainer(nn.Linear(2, 2), str(tmp_path / "new"), "p")
    assert isinstance(t.repository, Repository) and (tmp_path / "new" / ".coral").is_dir()
    with pytest.raises(InvalidArgumentError):
        CoralTrainer("not a model", tmp_path / "new", "p")
    with pytest.raises(InvalidArgumentError):
        t.set_optimizer(object())
    with pytest.raises(InvalidArgumentError):
        t.epoch_end(-1)


def test_async_saves_report_hashes_through_callbacks_and_load_exactly(tmp_path):
    model, opt, trainer = make(tmp_path, CheckpointConfig(save_every_n_steps=2, save_every_n_epochs=1, async_save=True))
    hashes = []
    trainer.add_callback("checkpoint_save", lambda t, h: hashes.append(h))
    for _ in range(4):
        trainer.step(loss=train_batch(model, opt))
    trainer.epoch_end(0)
    trainer.wait()
    assert [c["global_step"] for c in trainer.list_checkpoints()] == [2, 4]  # epoch end adds no copy of step 4
    assert hashes == [c["commit_hash"] for c in trainer.list_checkpoints()]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    train_batch(model, opt)  # the snapshot was taken at save time: later training must not leak into it
    trainer.load_checkpoint()
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_auto_step_interval_saves_a_first_checkpoint_to_measure_cost(tmp_path):
    config = CheckpointConfig(save_every_n_steps="auto", mean_time_between_failures=3600.0, save_every_n_epochs=1)
    model, opt, trainer = make(tmp_path, config, sched=False)
    saved = [trainer.step(loss=train_batch(model, opt)) for _ in range(5)]
    assert sum(1 for h in saved if h) == 1  # one save to measure its cost; a 1 h MTBF then spaces them far apart
    assert trainer.manager.auto_save_interval is not None


def test_default_config_saves_at_every_epoch_end(tmp_path):
    # the guide's "automatic checkpointing": CoralTrainer(model, repo, experiment_name=...) with no config
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    trainer = CoralTrainer(model, Repository(tmp_path / "repo", init=True), experiment_name="default")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer.set_optimizer(opt)
    saved = []
    for epoch in range(3):
        trainer.step(loss=train_batch(model, opt))
        saved.append(trainer.epoch_end(epoch))
    assert all(saved) and len(set(saved)) == 3
    assert [c["commit_hash"] for c in trainer.list_checkpoints()] == saved
