"""CheckpointConfig: validation naming the field, TOML and environment loading."""

from __future__ import annotations

import pytest

from coral.errors import ConfigError
from coral.training import CheckpointConfig


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"save_every_n_epochs": 0}, "save_every_n_epochs"),
        ({"save_every_n_steps": -5}, "save_every_n_steps"),
        ({"save_every_n_steps": "often"}, "save_every_n_steps"),
        ({"save_every_n_steps": "auto"}, "mean_time_between_failures"),
        ({"keep_last_n_checkpoints": 0}, "keep_last_n_checkpoints"),
        ({"keep_best_n_checkpoints": 0}, "keep_best_n_checkpoints"),
        ({"early_stopping_patience": 3}, "early_stopping_patience"),  # needs a metric
        ({"save_on_best_metric": "l", "early_stopping_threshold": -1}, "early_stopping_threshold"),
        ({"save_on_best_metric": "l", "early_stopping_threshold": float("nan")}, "early_stopping_threshold"),
        ({"minimize_metric": "yes"}, "minimize_metric"),
        ({"min_free_space": -1}, "min_free_space"),
        ({"save_every_n_steps": "auto", "mean_time_between_failures": 0}, "mean_time_between_failures"),
        ({"keep_checkpoint_every_n_epochs": True}, "keep_checkpoint_every_n_epochs"),
    ],
)
def test_bad_values_name_the_field_and_value(kwargs, field):
    with pytest.raises(ConfigError) as info:
        CheckpointConfig(**kwargs)
    assert field in str(info.value)
    assert info.value.parameter == field


def test_seed_example_configs_construct():
    CheckpointConfig(
        save_every_n_epochs=1, save_every_n_steps=500, save_on_best_metric="val_loss", minimize_metric=True,
        keep_last_n_checkpoints=None, save_optimizer_state=True, save_scheduler_state=True, save_random_state=True,
        auto_commit=True, tag_best_checkpoints=True,
    )
    CheckpointConfig(
        save_on_best_metric="val_f1_score", minimize_metric=False, keep_best_n_checkpoints=10,
        commit_message_template="Best F1: {val_f1_score:.4f} at epoch {epoch}",
    )


def test_from_toml_reads_checkpoint_table(tmp_path):
    p = tmp_path / "coral.toml"
    p.write_text('[checkpoint]\nsave_every_n_steps = 100\nsave_on_best_metric = "val_loss"\nkeep_last_n_checkpoints = 3\n')
    cfg = CheckpointConfig.from_toml(p)
    assert (cfg.save_every_n_steps, cfg.save_on_best_metric, cfg.keep_last_n_checkpoints) == (100, "val_loss", 3)


def test_from_toml_unknown_field_and_missing_table(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text("[checkpoint]\nsave_evry_n_steps = 1\n")
    with pytest.raises(ConfigError, match="save_evry_n_steps"):
        CheckpointConfig.from_toml(p)
    p.write_text("[other]\nx = 1\n")
    with pytest.raises(ConfigError, match="checkpoint"):
        CheckpointConfig.from_toml(p)


def test_from_env_parses_types():
    env = {
        "CORAL_SAVE_EVERY_N_STEPS": "250",
        "CORAL_SAVE_ON_BEST_METRIC": "val_acc",
        "CORAL_MINIMIZE_METRIC": "false",
        "CORAL_ASYNC_SAVE": "1",
        "CORAL_EARLY_STOPPING_THRESHOLD": "0.01",
        "UNRELATED": "x",
    }
    cfg = CheckpointConfig.from_env(env)
    assert cfg.save_every_n_steps == 250 and cfg.save_on_best_metric == "val_acc"
    assert cfg.minimize_metric is False and cfg.async_save is True and cfg.early_stopping_threshold == 0.01


def test_from_env_bad_value_names_variable_field():
    with pytest.raises(ConfigError, match="async_save"):
        CheckpointConfig.from_env({"CORAL_ASYNC_SAVE": "maybe"})


@pytest.mark.parametrize("template", ["{epoch", "loss {loss:.4zz}", "}"])
def test_malformed_commit_message_template_is_refused_at_construction(template):
    with pytest.raises(ConfigError, match="commit_message_template"):
        CheckpointConfig(commit_message_template=template)
