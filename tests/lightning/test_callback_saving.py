"""CoralCallback inside a real pl.Trainer: what it commits, where, when, and with which metadata."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import pytorch_lightning as pl
from coral import Repository
from coral.errors import InvalidArgumentError
from coral_lightning import CoralCallback
from pytorch_lightning.callbacks import ModelCheckpoint


def _commits(repo: Repository, branch: str) -> list:
    return list(reversed(repo.log(branch=branch)))  # oldest first


def _fit(app, tmp_path, callbacks, max_epochs=3, module=None, **trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    module = module or app.TinyModule()
    train, val = app.loaders()
    trainer = app.trainer(callbacks, tmp_path / "root", max_epochs, **trainer_kwargs)
    trainer.fit(module, train, val)
    return trainer, module


def test_epoch_saves_commit_on_a_new_branch_with_metrics_and_hparams(app, tmp_path) -> None:
    repo = Repository(tmp_path / "r", init=True)
    repo.stage_weights({"pretrained": np.arange(4, dtype=np.float32)})
    base = repo.commit("pretrained")
    cb = CoralCallback(repo=repo, save_every_n_epochs=1, branch="experiment_1")
    rec = app.MetricsRecorder()
    _fit(app, tmp_path, [cb, rec], max_epochs=3)

    assert "experiment_1" in repo.list_branches()
    assert repo.resolve("main") == base  # main untouched; the branch started from it
    commits = _commits(repo, "experiment_1")
    assert commits[0].hash == base and len(commits) == 4
    for epoch, (info, logged, weights) in enumerate(zip(commits[1:], rec.metrics, rec.weights, strict=True), start=1):
        meta = info.metadata
        assert meta["epoch"] == epoch and meta["global_step"] == 8 * epoch
        assert meta["metrics"] == logged and {"train_loss", "val_loss"} <= set(logged)
        assert meta["hparams"] == {"lr": 0.05, "hidden": 8, "gamma": 0.7}
        assert meta["lightning"]["trigger"] == "epoch"
        assert meta["lightning"]["package"] == "pytorch_lightning"
        stored = repo.load_arrays(info.hash, names=list(weights))
        assert all(stored[n].tobytes() == weights[n].tobytes() for n in weights)
        tree = repo.get_commit(info.hash).tree
        assert any(n.startswith("optim/") for n in tree) and any(n.startswith("rng/") for n in tree)
    assert cb.last_commit_hash == commits[-1].hash == repo.resolve("experiment_1")


def test_every_n_epochs_and_every_n_steps(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_epochs=2, branch="epochs")
    _fit(app, tmp_path, [cb], max_epochs=5)
    assert [c.metadata["epoch"] for c in _commits(cb.repo, "epochs")] == [2, 4]

    steps = CoralCallback(repo_path=tmp_path / "s", init=True, save_every_n_steps=3, branch="steps")
    _fit(app, tmp_path, [steps], max_epochs=2)  # 8 optimizer steps per epoch
    commits = _commits(steps.repo, "steps")
    assert [c.metadata["global_step"] for c in commits] == [3, 6, 9, 12, 15]
    assert [c.metadata["epoch"] for c in commits] == [0, 0, 1, 1, 1]  # completed epochs at that step
    assert {c.metadata["lightning"]["trigger"] for c in commits} == {"step"}


def test_steps_count_optimizer_steps_under_gradient_accumulation(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_steps=2, branch="acc")
    _fit(app, tmp_path, [cb], max_epochs=1, accumulate_grad_batches=2)  # 4 optimizer steps
    assert [c.metadata["global_step"] for c in _commits(cb.repo, "acc")] == [2, 4]


@pytest.mark.parametrize(
    ("mode", "scores", "saved", "best"),
    [("min", [3.0, 1.0, 2.0, 0.5, 4.0], [1.0, 0.5], 0.5), ("max", [1.0, 3.0, 2.0, 5.0, 4.0], [3.0, 5.0], 5.0)],
)
def test_save_on_best_commits_only_improvements(app, tmp_path, mode, scores, saved, best) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_on_best="score", mode=mode, branch="best")
    _fit(app, tmp_path, [cb], max_epochs=5, module=app.ScriptedModule(scores))
    commits = _commits(cb.repo, "best")
    # the first validation is always an improvement over "nothing yet"
    assert [c.metadata["metrics"]["score"] for c in commits] == [scores[0], *saved]
    assert {c.metadata["lightning"]["trigger"] for c in commits} == {"best"}
    assert cb.repo.get_commit(cb.best_commit_hash).metadata["metrics"]["score"] == best
    assert cb.repo.resolve("best-best") == cb.best_commit_hash  # the manager's best tag


def test_save_on_best_also_checks_validation_in_the_middle_of_an_epoch(app, tmp_path) -> None:
    # two validations per epoch (after 4 of 8 batches and at the end); the mid-epoch ones save at on_validation_end
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_on_best="score", mode="min", branch="mid")
    _fit(app, tmp_path, [cb], max_epochs=2, module=app.ScriptedModule([5.0, 4.0, 3.0, 9.0]), val_check_interval=4)
    commits = _commits(cb.repo, "mid")
    steps_scores = [(c.metadata["global_step"], c.metadata["metrics"]["score"]) for c in commits]
    assert steps_scores == [(4, 5.0), (8, 4.0), (12, 3.0)]


def test_epoch_and_best_together_make_one_commit_per_moment(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_epochs=2, save_on_best="score", branch="both")
    _fit(app, tmp_path, [cb], max_epochs=4, module=app.ScriptedModule([2.0, 3.0, 1.0, 4.0]))
    triggers = [(c.metadata["epoch"], c.metadata["lightning"]["trigger"]) for c in _commits(cb.repo, "both")]
    assert triggers == [(1, "best"), (2, "epoch"), (3, "best"), (4, "epoch")]


def test_missing_best_metric_is_reported_once(app, tmp_path, caplog) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_on_best="val_acc", branch="nometric")
    with caplog.at_level(logging.WARNING, logger="coral_lightning"):
        _fit(app, tmp_path, [cb], max_epochs=2)
    warnings = [r for r in caplog.records if "val_acc" in r.getMessage()]
    assert len(warnings) == 1 and "val_loss" in warnings[0].getMessage()
    assert "nometric" not in cb.repo.list_branches()  # nothing was committed


def test_metadata_keys_record_trainer_and_module_attributes(app, tmp_path) -> None:
    keys = ["max_epochs", "precision", "note", "hparams.hidden", "accumulate_grad_batches"]
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="meta", metadata_keys=keys)
    _fit(app, tmp_path, [cb], max_epochs=1)
    meta = cb.repo.get_commit("meta").metadata
    assert {k: meta[k] for k in keys} == {
        "max_epochs": 1, "precision": "32-true", "note": "tiny", "hparams.hidden": 8, "accumulate_grad_batches": 1,
    }


def test_unknown_metadata_key_fails_before_training(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="meta", metadata_keys=["no_such_attribute"])
    with pytest.raises(InvalidArgumentError, match="no_such_attribute"):
        _fit(app, tmp_path, [cb], max_epochs=1)
    assert "meta" not in cb.repo.list_branches()  # nothing committed


def test_include_optimizer_false_stores_weights_and_loops_only(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="light", include_optimizer=False)
    _fit(app, tmp_path, [cb], max_epochs=1)
    tree = cb.repo.get_commit("light").tree
    assert not any(n.startswith(("optim/", "sched/")) for n in tree)
    assert {"net.0.weight", "net.3.bias"} <= set(tree)
    assert cb.repo.get_commit("light").metadata["lightning"]["include_optimizer"] is False


def test_keep_last_prunes_older_checkpoints(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="ret", keep_last_n_checkpoints=2)
    _fit(app, tmp_path, [cb], max_epochs=4)
    commits = _commits(cb.repo, "ret")
    assert [cb.repo.is_pruned(c.hash) for c in commits] == [True, True, False, False]
    assert cb.resolve("last") == commits[-1].hash
    assert [h["pruned"] for h in cb.manager.checkpoint_history] == [True, True, False, False]
    assert len(cb.manager.list_checkpoints()) == 2  # only what can still be loaded


def test_works_beside_lightnings_own_model_checkpoint(app, tmp_path) -> None:
    mc = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=1)
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="side")
    trainer, _ = _fit(app, tmp_path, [cb, mc], max_epochs=2, enable_checkpointing=True)
    assert len(list((tmp_path / "ckpts").glob("*.ckpt"))) == 1
    assert len(cb.repo.log(branch="side")) == 2
    # ModelCheckpoint's state (a tensor score and file paths) travels in the Coral commit too
    data = [n for n in cb.repo.get_commit("side").tree if n.startswith("data/lightning/")]
    assert data, "the ModelCheckpoint score tensor should be stored as a tensor"
    assert trainer.checkpoint_callback is mc


def test_default_trainer_checkpointing_stays_on(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="default")
    trainer, _ = _fit(app, tmp_path, [cb], max_epochs=1, enable_checkpointing=True)
    assert isinstance(trainer.checkpoint_callback, ModelCheckpoint)  # Coral does not replace it
    assert len(cb.repo.log(branch="default")) == 1


def test_no_commit_during_sanity_check_or_validate(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="quiet", save_on_best="val_loss")
    pl.seed_everything(0, verbose=False)
    module = app.TinyModule()
    train, val = app.loaders()
    trainer = app.trainer([cb], tmp_path / "root", 1, num_sanity_val_steps=2)
    trainer.validate(module, val)
    assert "quiet" not in cb.repo.list_branches()
    trainer = app.trainer([cb], tmp_path / "root", 1, num_sanity_val_steps=2)
    trainer.fit(module, train, val)
    assert [c.metadata["global_step"] for c in cb.repo.log(branch="quiet")] == [8]


def test_push_to_pushes_each_checkpoint_of_a_real_fit(app, tmp_path) -> None:
    Repository(tmp_path / "remote", init=True).close()
    repo = Repository(tmp_path / "r", init=True)
    repo.add_remote("origin", tmp_path / "remote")
    cb = CoralCallback(repo=repo, save_every_n_epochs=1, branch="run", push_to="origin")
    _fit(app, tmp_path, [cb], max_epochs=2)  # fit returns once the background pushes are done
    with Repository(tmp_path / "remote") as remote:
        assert remote.resolve("run") == repo.resolve("run") == repo.resolve("origin/run") == cb.last_commit_hash
        assert len(_commits(remote, "run")) == 2 and remote.fsck()["ok"]


def test_async_save_commits_the_same_bytes_as_a_sync_save(app, tmp_path) -> None:
    """async_save=True: the hook copies and returns, the write runs in the background; every commit holds the
    state of the moment its hook ran, bit for bit (the same trees as a sync run), and fit ends written."""
    runs = {}
    for flavour in (False, True):
        cb = CoralCallback(repo_path=tmp_path / f"r{flavour}", init=True, save_every_n_steps=4, branch="b",
                           async_save=flavour)
        rec = app.MetricsRecorder()
        _fit(app, tmp_path / str(flavour), [cb, rec], max_epochs=2)
        commits = _commits(cb.repo, "b")
        assert cb.last_commit_hash == commits[-1].hash  # fit returned with the last save written
        runs[flavour] = (cb.repo, commits, rec)
    (sync_repo, sync_commits, _), (async_repo, async_commits, rec) = runs[False], runs[True]
    assert [c.metadata["global_step"] for c in async_commits] == [4, 8, 12, 16]
    for a, b in zip(sync_commits, async_commits, strict=True):
        tree_a, tree_b = sync_repo.get_commit(a.hash).tree, async_repo.get_commit(b.hash).tree
        assert {n: e.chunks for n, e in tree_a.items()} == {n: e.chunks for n, e in tree_b.items()}
    for commit, weights in zip(async_commits[1::2], rec.weights, strict=True):  # steps 8 and 16: the epoch ends
        stored = async_repo.load_arrays(commit.hash, names=list(weights))
        assert all(stored[n].tobytes() == w.tobytes() for n, w in weights.items())


def test_async_save_is_refused_unless_a_bool(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="async_save"):
        CoralCallback(repo_path=tmp_path / "r", init=True, async_save="yes")  # type: ignore[arg-type]
