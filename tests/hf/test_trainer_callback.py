"""CoralTrainerCallback on a real transformers.Trainer (tiny BERT from a config, synthetic data, offline)."""

from __future__ import annotations

import logging

import pytest
import torch
from coral import Repository
from coral.errors import CheckpointError, CoralError, InvalidArgumentError, RepositoryNotFoundError, UnknownRemoteError
from coral_hf import CoralHFCallback, CoralTrainerCallback, RemotesUnavailableError
from coral_torch.convert import tensor_to_numpy

STATE_ROOTS = ("optim", "sched", "rng", "data")


def _spec(tmp_path, **kw):
    spec = {"repo": str(tmp_path / "repo"), "output_dir": str(tmp_path / "out")}
    spec.update(kw)
    return spec


def _model_tensors(weights):
    return {n: w for n, w in weights.items() if n.split("/", 1)[0] not in STATE_ROOTS}


def _oldest_first(repo):
    return list(reversed(repo.log()))


def test_step_saves_record_args_config_and_trainer_state(tmp_path, tiny):
    _, _, model = tiny.run(_spec(tmp_path, max_steps=6, callback={"save_every_n_steps": 2}))
    repo = Repository(tmp_path / "repo")
    commits = _oldest_first(repo)
    assert [c.metadata["global_step"] for c in commits] == [2, 4, 6]  # the train-end save is the step-6 one
    hf = commits[-1].metadata["hf"]
    assert hf["event"] == "step"
    assert hf["training_args"]["learning_rate"] == 1e-3 and hf["training_args"]["max_steps"] == 6
    assert hf["training_args"]["eval_strategy"] == "no"  # an enum, stored by value
    assert hf["model_config"]["hidden_size"] == 32 and hf["model_config"]["num_hidden_layers"] == 2
    assert hf["model_config"]["architectures"] == ["BertForSequenceClassification"]
    assert hf["trainer_state"]["global_step"] == 6 and hf["trainer_state"]["max_steps"] == 6
    assert hf["world_size"] == 1
    # the last commit holds the final weights bit for bit, plus optimizer/scheduler/RNG tensors
    stored = repo.get_weights(commits[-1].hash)
    final = {k: tensor_to_numpy(v) for k, v in model.state_dict().items()}
    model_part = _model_tensors(stored)
    assert sorted(model_part) == sorted(final)
    for name, arr in final.items():
        assert model_part[name].data.tobytes() == arr.tobytes(), name
    roots = {n.split("/", 1)[0] for n in stored}
    assert {"optim", "rng"} <= roots  # the scheduler's state is all JSON: it lives in the metadata
    assert {"optimizer_state", "scheduler_state", "random_state"} <= set(
        commits[-1].metadata["coral_checkpoint"]["state_skeletons"]
    )


def test_save_on_best_tags_best_and_load_from_coral_restores_it(tmp_path, tiny):
    trainer, cb, _ = tiny.run(
        _spec(
            tmp_path,
            max_steps=8,
            eval_steps=2,
            callback={"save_on_best": "loss", "mode": "max", "metadata_keys": ["eval_runtime", "total_flos"]},
        )
    )
    repo = Repository(tmp_path / "repo")
    evals = {
        c.hash: c.metadata["metrics"]["eval_loss"] for c in repo.log() if "eval_loss" in c.metadata["metrics"]
    }
    assert evals, "no evaluation checkpoint was saved"
    events = {c.hash: c.metadata["hf"]["event"] for c in repo.log()}
    history = [h["metric_value"] for h in cb.manager.checkpoint_history if events[h["commit_hash"]] == "best"]
    assert history, "no save on improvement"
    assert history == sorted(history) and len(set(history)) == len(history)  # saved only on improvement (max)
    # a save at the last step (train end) records that step's evaluation too, whether or not it was the best
    assert all(events[h] == "best" or h == repo.resolve("HEAD") for h in evals)
    best_hash = max(evals, key=evals.get)
    assert repo.resolve(f"best-{cb.manager.experiment_name}") == best_hash
    assert "total_flos" in repo.get_commit(best_hash).metadata["hf"]["values"]

    count = len(repo.log())
    trainer.evaluate()  # an evaluation outside training saves nothing
    assert len(repo.log()) == count

    fresh = tiny.make_model(seed=5)
    assert cb.best_commit_hash == best_hash
    assert cb.load_from_coral(fresh) == best_hash
    best = _model_tensors(repo.get_weights(best_hash))
    for name, t in fresh.state_dict().items():
        assert tensor_to_numpy(t).tobytes() == best[name].data.tobytes(), name
    assert cb.load_from_coral(fresh, "last") == cb.last_commit_hash == repo.resolve("HEAD")


def test_branch_retention_and_weights_only(tmp_path, tiny):
    tiny.run(
        _spec(
            tmp_path,
            max_steps=3,
            callback={
                "save_every_n_steps": 1,
                "branch": "bert_finetuning",
                "keep_last_n_checkpoints": 1,
                "include_optimizer": False,
            },
        )
    )
    repo = Repository(tmp_path / "repo")
    assert repo.current_branch == "bert_finetuning"
    log = repo.log("bert_finetuning")
    assert [c.metadata["global_step"] for c in reversed(log)] == [1, 2, 3]
    assert [c.pruned for c in reversed(log)] == [True, True, False]
    roots = {n.split("/", 1)[0] for n in repo.get_weights(log[0].hash)}
    assert "optim" not in roots and "rng" in roots
    assert set(log[0].metadata["coral_checkpoint"]["state_skeletons"]) == {"random_state"}


def test_epoch_saves_and_following_the_trainers_own_saves(tmp_path, tiny):
    tiny.run(
        _spec(
            tmp_path,
            epochs=2,
            n=16,
            save_strategy="steps",
            save_steps=3,
            callback={"save_every_n_epochs": 1, "save_on_train_end": False},
        )
    )
    repo = Repository(tmp_path / "repo")
    got = [(c.metadata["global_step"], c.metadata["hf"]["event"]) for c in _oldest_first(repo)]
    # the Trainer always saves its last step, before the epoch ends: one commit at step 8, not two
    assert got == [(3, "trainer_save"), (4, "epoch"), (6, "trainer_save"), (8, "trainer_save")]
    assert (tmp_path / "out" / "checkpoint-3").is_dir()  # the Trainer's own checkpoint happened too


def test_trainer_save_after_an_evaluation_at_the_same_step_records_its_metrics(tmp_path, tiny):
    # the watched metric is not produced (no compute_metrics), so only the Trainer's own saves commit
    tiny.run(
        _spec(
            tmp_path,
            max_steps=4,
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            callback={"save_on_best": "accuracy", "mode": "max"},
        )
    )
    commits = _oldest_first(Repository(tmp_path / "repo"))
    assert [(c.metadata["global_step"], c.metadata["hf"]["event"]) for c in commits] == [
        (2, "trainer_save"),
        (4, "trainer_save"),
    ]
    for c in commits:
        assert "eval_loss" in c.metadata["metrics"], c.metadata["metrics"]


def test_argument_errors_name_the_value(tmp_path):
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CoralTrainerCallback()
    repo = Repository(tmp_path / "r", init=True)
    with pytest.raises(UnknownRemoteError, match="remote='origin'"):
        CoralTrainerCallback(repo=repo, push_to="origin")
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CoralTrainerCallback(repo=repo, repo_path=tmp_path / "r")
    with pytest.raises(InvalidArgumentError, match="mode='up'"):
        CoralTrainerCallback(repo=repo, mode="up")
    with pytest.raises(InvalidArgumentError, match="save_every_n_steps=0"):
        CoralTrainerCallback(repo=repo, save_every_n_steps=0)
    with pytest.raises(InvalidArgumentError, match="branch"):
        CoralTrainerCallback(repo=repo, branch="../x")
    with pytest.raises(RepositoryNotFoundError):
        CoralTrainerCallback(repo_path=tmp_path / "missing", init=False)
    assert CoralHFCallback is CoralTrainerCallback
    cb = CoralTrainerCallback(repo=repo, save_on_best="accuracy", mode="max")
    assert cb.save_on_best == "eval_accuracy" and cb.manager.config.minimize_metric is False
    assert issubclass(RemotesUnavailableError, CoralError)
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        cb.load_from_coral(torch.nn.Linear(1, 1), "best")


def test_documented_import_path():
    from coral.integrations import hf_trainer

    assert hf_trainer.CoralTrainerCallback is CoralTrainerCallback
    assert hf_trainer.CoralHFCallback is CoralTrainerCallback
    assert callable(hf_trainer.resume_from_coral)


def test_push_to_pushes_the_checkpoints_of_a_real_run(tmp_path, tiny):
    Repository(tmp_path / "remote", init=True).close()
    with Repository(tmp_path / "repo", init=True) as repo:
        repo.add_remote("origin", tmp_path / "remote")
    _, cb, _ = tiny.run(_spec(tmp_path, max_steps=4, callback={"save_every_n_steps": 2, "push_to": "origin"}))
    cb.manager.wait()  # the train-end wait already waited for the pushes; nothing is left
    with Repository(tmp_path / "remote") as remote, Repository(tmp_path / "repo") as repo:
        assert [c.hash for c in remote.log()] == [c.hash for c in repo.log()] and len(repo.log()) == 2
        assert remote.fsck()["ok"] and repo.resolve("origin/main") == repo.head_commit()


def test_save_on_best_without_evaluation_warns_once(tmp_path, tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="coral_hf.callback"):
        tiny.run(_spec(tmp_path, max_steps=4, callback={"save_on_best": "eval_accuracy", "save_every_n_steps": 2}))
    warnings = [r for r in caplog.records if "eval_strategy='no'" in r.getMessage()]
    assert len(warnings) == 1 and "save_on_best='eval_accuracy'" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coral_hf.callback"):
        tiny.run(_spec(tmp_path / "b", max_steps=2, callback={"save_every_n_steps": 2}))
    assert not [r for r in caplog.records if "eval_strategy" in r.getMessage()]
