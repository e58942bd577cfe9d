"""Loading from Coral: load_from_coral (best, else latest, or any ref) and ``ckpt_path="coral://..."``."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from coral import Repository
from coral.errors import CheckpointError, CoralError, InvalidArgumentError, RefNotFoundError
from coral_lightning import CoralCallback, CoralCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint


def _fit(app, tmp_path, callbacks, max_epochs, module=None, ckpt_path=None, **kwargs):
    pl.seed_everything(0, verbose=False)
    module = module or app.TinyModule()
    train, val = app.loaders()
    trainer = app.trainer(callbacks, tmp_path / "root", max_epochs, **kwargs)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer, module


def _same(model: torch.nn.Module, weights: dict) -> bool:
    return all(model.state_dict()[k].numpy().tobytes() == v.tobytes() for k, v in weights.items())


def test_load_from_coral_prefers_the_best_checkpoint(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_epochs=1, save_on_best="score", branch="b")
    rec = app.MetricsRecorder()
    _fit(app, tmp_path, [cb, rec], 4, module=app.ScriptedModule([3.0, 1.0, 2.0, 5.0]))
    fresh = app.TinyModule(hidden=8)
    loaded = CoralCallback(repo_path=tmp_path / "r", branch="b", save_on_best="score").load_from_coral(fresh)
    assert loaded == cb.best_commit_hash and cb.repo.get_commit(loaded).metadata["epoch"] == 2
    assert _same(fresh, rec.weights[1]) and not _same(fresh, rec.weights[3])


def test_load_from_coral_falls_back_to_latest_and_takes_any_ref(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b")
    rec = app.MetricsRecorder()
    _fit(app, tmp_path, [cb, rec], 3)
    fresh = app.TinyModule()
    assert cb.load_from_coral(fresh) == cb.repo.resolve("b")
    assert _same(fresh, rec.weights[2])
    first = cb.repo.resolve("b~2")
    assert cb.load_from_coral(fresh, commit_ref=first[:10]) == first
    assert _same(fresh, rec.weights[0])
    assert cb.load_from_coral(fresh, commit_ref="b~1") == cb.repo.resolve("b~1")


def test_load_from_coral_errors(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b")
    with pytest.raises(RefNotFoundError, match="no Coral checkpoint yet"):
        cb.load_from_coral(app.TinyModule())
    _fit(app, tmp_path, [cb], 1)
    for other in (app.TinyModule(hidden=4), torch.nn.Linear(4, 1)):  # other shapes, other names
        before = {k: v.clone() for k, v in other.state_dict().items()}
        with pytest.raises(CoralError):
            cb.load_from_coral(other)
        assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # never half-loaded
    with pytest.raises(RefNotFoundError):
        cb.load_from_coral(app.TinyModule(), commit_ref="nope")
    with pytest.raises(RefNotFoundError, match="no best checkpoint"):
        cb.resolve("best")


def test_resume_from_best_and_from_a_hash_in_process(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, save_every_n_epochs=1, save_on_best="score", branch="b")
    _fit(app, tmp_path, [cb], 3, module=app.ScriptedModule([1.0, 2.0, 3.0]))
    best = cb.best_commit_hash
    assert cb.repo.get_commit(best).metadata["epoch"] == 1

    again = CoralCallback(repo_path=tmp_path / "r", save_every_n_epochs=1, save_on_best="score", branch="b")
    trainer, _ = _fit(app, tmp_path, [again], 2, module=app.ScriptedModule([9.0, 0.5]), ckpt_path="coral://best")
    assert trainer.global_step == 16  # resumed after epoch 1 (step 8) and ran epoch 2 only
    newest = again.repo.get_commit(again.last_commit_hash).metadata
    assert newest["lightning"]["resumed_from"] == best and newest["epoch"] == 2

    third = CoralCallback(repo_path=tmp_path / "r", branch="b")
    h = cb.repo.resolve("b~1")
    trainer, _ = _fit(app, tmp_path, [third], cb.repo.get_commit(h).metadata["epoch"] + 1, ckpt_path=f"coral://{h[:12]}")
    assert trainer.current_epoch == cb.repo.get_commit(h).metadata["epoch"] + 1


def test_bad_coral_paths(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b")
    _fit(app, tmp_path, [cb], 1, ckpt_path="coral://last")  # nothing saved yet: fits from scratch
    with pytest.raises(InvalidArgumentError, match="coral://"):
        _fit(app, tmp_path, [cb], 1, ckpt_path="coral://")
    with pytest.raises(RefNotFoundError):
        _fit(app, tmp_path, [cb], 1, ckpt_path="coral://no-such-branch")


def test_plain_commits_cannot_be_resumed_but_their_weights_load(app, tmp_path) -> None:
    repo = Repository(tmp_path / "r", init=True)
    module = app.TinyModule()
    repo.stage_weights({k: v.numpy() for k, v in module.state_dict().items()})
    plain = repo.commit("weights only")
    cb = CoralCallback(repo=repo, branch="b")
    with pytest.raises(CheckpointError, match="not saved by CoralCallback"):
        _fit(app, tmp_path, [cb], 1, ckpt_path=f"coral://{plain}")
    fresh = app.TinyModule()
    assert cb.load_from_coral(fresh, commit_ref=plain) == plain
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in module.state_dict().items())


def test_resume_needs_the_optimizer_state(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b", include_optimizer=False)
    _fit(app, tmp_path, [cb], 1)
    with pytest.raises(CheckpointError, match="include_optimizer=False"):
        _fit(app, tmp_path, [cb], 2, ckpt_path="coral://last")


def test_validate_and_test_accept_coral_paths(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b", save_on_best="score", mode="max")
    rec = app.MetricsRecorder()
    trainer, trained = _fit(app, tmp_path, [cb, rec], 3, module=app.ScriptedModule([1.0, 3.0, 2.0]))
    module = app.TinyModule()
    _, val = app.loaders()
    app.trainer([cb], tmp_path / "root", 1).validate(module, val, ckpt_path="coral://best")
    assert _same(module, rec.weights[1])
    # fit, then test/validate(ckpt_path="best") without a ModelCheckpoint: Lightning's "best" is Coral's best
    assert not _same(trained, rec.weights[1])
    trainer.validate(trained, val, ckpt_path="best")
    assert _same(trained, rec.weights[1])


def test_standalone_checkpoint_io_plugin(app, tmp_path) -> None:
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b")
    rec = app.MetricsRecorder()
    _fit(app, tmp_path, [cb, rec], 2)
    module = app.TinyModule()
    _, val = app.loaders()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         plugins=[CoralCheckpointIO(tmp_path / "r")], default_root_dir=tmp_path / "root")
    trainer.validate(module, val, ckpt_path="coral://b~1")
    assert _same(module, rec.weights[0])
    trainer.validate(module, val, ckpt_path="coral://last")  # standalone: the current branch's head
    assert _same(module, rec.weights[1])


def test_model_checkpoint_state_survives_a_coral_resume(app, tmp_path) -> None:
    mc = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=2)
    cb = CoralCallback(repo_path=tmp_path / "r", init=True, branch="b")
    _fit(app, tmp_path, [cb, mc], 2, enable_checkpointing=True)
    score, kept = mc.best_model_score.clone(), dict(mc.best_k_models)

    mc2 = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=2)
    cb2 = CoralCallback(repo_path=tmp_path / "r", branch="b")
    pl.seed_everything(0, verbose=False)
    module = app.TinyModule()
    train, val = app.loaders()
    trainer = app.trainer([cb2, mc2], tmp_path / "root", 2, enable_checkpointing=True)
    trainer.fit(module, train, val, ckpt_path="coral://last")  # already at max_epochs: restores, trains nothing
    assert torch.equal(mc2.best_model_score, score) and mc2.best_model_score.dtype == score.dtype
    assert set(mc2.best_k_models) == set(kept)
