"""Issue 28, training layer: the user guide's configs as written, loadable-only listings, diffs that say why,
and a LlamaHome-style TOML file (seed 001) with sub-tables and human sizes."""

from __future__ import annotations

import numpy as np
import pytest
from coral import Repository
from coral.errors import ConfigError
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def weights(seed: int) -> dict[str, np.ndarray]:
    return {"layer.weight": np.random.default_rng(seed).standard_normal((16, 8)).astype(np.float32)}


@pytest.fixture
def repo(tmp_path):
    return Repository(tmp_path / "repo", init=True)


def test_guide_retention_configs_construct_without_a_metric():
    # section 6.2 and the "aggressive cleanup" config of 6.9, as written
    CheckpointConfig(keep_last_n_checkpoints=10, keep_best_n_checkpoints=3, keep_checkpoint_every_n_epochs=10)
    CheckpointConfig(keep_last_n_checkpoints=3, keep_best_n_checkpoints=5, keep_checkpoint_every_n_epochs=None)


def test_keep_best_without_a_metric_ranks_by_loss(repo):
    cfg = CheckpointConfig(save_every_n_epochs=1, keep_last_n_checkpoints=1, keep_best_n_checkpoints=2)
    m = CheckpointManager(repo, cfg, experiment_name="byloss")
    losses = [0.9, 0.2, 0.8, 0.1, 0.7]
    for epoch, loss in enumerate(losses, start=1):
        m.save_checkpoint(weights(epoch), TrainingState(epoch=epoch, global_step=epoch, loss=loss))
    kept = [h["metrics"]["loss"] for h in m.list_checkpoints()]
    assert kept == [0.2, 0.1, 0.7]  # the two lowest losses and the newest


def test_list_checkpoints_only_loadable_history_marks_pruned(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=1, keep_last_n_checkpoints=2), experiment_name="p")
    for epoch in range(1, 5):
        m.save_checkpoint(weights(epoch), TrainingState(epoch=epoch, global_step=epoch))
    listed = m.list_checkpoints()
    assert [h["epoch"] for h in listed] == [3, 4]
    assert all(m.load_checkpoint(h["commit_hash"]) for h in listed)
    assert [h["pruned"] for h in m.checkpoint_history] == [True, True, False, False]


def test_diff_with_a_pruned_side_says_why_there_is_no_similarity(repo):
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=1, keep_last_n_checkpoints=1), experiment_name="d")
    for epoch in (1, 2):
        m.save_checkpoint(weights(epoch), TrainingState(epoch=epoch, global_step=epoch))
    old, new = (h["commit_hash"] for h in m.checkpoint_history)
    d = m.diff_checkpoints(old, new)
    assert d["changed"] == ["layer.weight"] and d["similarity"] == {}
    assert "pruned" in d["similarity_unavailable"] and old[:12] in d["similarity_unavailable"]
    m.save_checkpoint(weights(3), TrainingState(epoch=3, global_step=3))
    m2 = CheckpointManager(repo, CheckpointConfig(save_every_n_epochs=1), experiment_name="d2")
    a = m2.save_checkpoint(weights(5), TrainingState(epoch=1, global_step=1))
    b = m2.save_checkpoint(weights(6), TrainingState(epoch=2, global_step=2))
    d = m2.diff_checkpoints(a, b)
    assert set(d["similarity"]) == {"layer.weight"} and d["similarity_unavailable"] is None


SEED_001_TOML = """
[checkpoint]
save_dir = "checkpoints"
save_steps = 1000
save_epochs = true
keep_last_n = 5
save_best = true
save_optimizer = true
save_scheduler = true
save_metrics = true
metric_for_best = "loss"
greater_is_better = false
save_format = "safetensors"

[checkpoint.cleanup]
enabled = true
max_checkpoints = 10
min_free_space = "10GB"
"""


def test_seed_001_toml_loads(tmp_path):
    p = tmp_path / "llamahome.toml"
    p.write_text(SEED_001_TOML)
    cfg = CheckpointConfig.from_toml(p)
    assert cfg.save_every_n_steps == 1000 and cfg.save_every_n_epochs == 1
    assert cfg.keep_last_n_checkpoints == 5  # keep_last_n within max_checkpoints
    assert cfg.save_on_best_metric == "loss" and cfg.minimize_metric is True
    assert cfg.min_free_space == 10 * 10**9


def test_nested_tables_of_coral_fields_and_a_clash(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[checkpoint]\nsave_every_n_epochs = 2\n[checkpoint.retention]\nkeep_last_n_checkpoints = 4\n')
    cfg = CheckpointConfig.from_toml(p)
    assert (cfg.save_every_n_epochs, cfg.keep_last_n_checkpoints) == (2, 4)
    p.write_text('[checkpoint]\nkeep_last_n_checkpoints = 2\n[checkpoint.retention]\nkeep_last_n_checkpoints = 4\n')
    with pytest.raises(ConfigError, match="keep_last_n_checkpoints"):
        CheckpointConfig.from_toml(p)
    p.write_text('[checkpoint]\n[checkpoint.cleanup]\nenabled = false\nmin_free_space = "1TB"\n')
    assert CheckpointConfig.from_toml(p).min_free_space is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("10GB", 10 * 10**9), ("512MiB", 512 * 2**20), ("1.5 kb", 1500), ("2048", 2048), (4096, 4096), (None, None)],
)
def test_min_free_space_takes_human_sizes(given, expected):
    assert CheckpointConfig(min_free_space=given).min_free_space == expected


def test_bad_size_names_the_field_and_env_reads_sizes():
    with pytest.raises(ConfigError) as info:
        CheckpointConfig(min_free_space="ten gigs")
    assert info.value.parameter == "min_free_space"
    assert CheckpointConfig.from_env({"CORAL_MIN_FREE_SPACE": "2GiB"}).min_free_space == 2 * 2**30
