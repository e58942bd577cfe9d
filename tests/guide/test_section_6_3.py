"""User guide section 6.3 (CheckpointManager): the blocks run in sequence in one namespace, as a reader would."""

from __future__ import annotations

import torch

from .conftest import GUIDE_HASH, GUIDE_HASH_2, run

G63 = [
    '''
from coral.version_control.repository import Repository
from coral.training import CheckpointManager, CheckpointConfig

# Create or open repository
repo = Repository("./my_model", init=True)

# Configure checkpointing
config = CheckpointConfig(
    save_every_n_epochs=2,
    save_on_best_metric="accuracy",
    minimize_metric=False,
    keep_last_n_checkpoints=5,
)

# Initialize checkpoint manager
manager = CheckpointManager(
    repository=repo,
    config=config,
    model_name="ResNet50",
    experiment_name="experiment_lr_0.001",
)
''',
    '''
from coral.training import TrainingState

state = TrainingState(
    epoch=10,
    global_step=5000,
    learning_rate=0.001,
    loss=0.234,
    metrics={"accuracy": 0.95, "val_loss": 0.189},
)

if manager.should_save_checkpoint(state):
    # Checkpoint will be saved
    pass
''',
    '''
from coral.integrations.pytorch import PyTorchIntegration

# Convert model to weights
weights = PyTorchIntegration.model_to_weights(model)

# Create training state
state = TrainingState(
    epoch=5,
    global_step=1000,
    learning_rate=0.001,
    loss=0.345,
    metrics={"accuracy": 0.92, "val_loss": 0.298},
    optimizer_state=PyTorchIntegration.save_optimizer_state(optimizer),
    scheduler_state=PyTorchIntegration.save_scheduler_state(scheduler),
)

# Save checkpoint
commit_hash = manager.save_checkpoint(weights, state)

if commit_hash:
    print(f"Checkpoint saved: {commit_hash[:8]}")
''',
    '''
# Load latest checkpoint
checkpoint = manager.load_checkpoint()

# Load specific checkpoint by hash
checkpoint = manager.load_checkpoint(commit_hash="a7f3c2d1")

# Load best checkpoint
checkpoint = manager.load_checkpoint(load_best=True)

if checkpoint:
    weights = checkpoint["weights"]  # Dict[str, WeightTensor]
    state = checkpoint["state"]      # TrainingState
    commit_hash = checkpoint["commit_hash"]

    # Restore model weights
    PyTorchIntegration.weights_to_model(weights, model)

    # Restore optimizer state
    if state.optimizer_state:
        PyTorchIntegration.load_optimizer_state(optimizer, state.optimizer_state)
''',
    '''
def log_checkpoint(state: TrainingState, commit_hash: str):
    """Log checkpoint to external system."""
    print(f"Checkpoint saved at epoch {state.epoch}")
    if commit_hash:
        # Could log to MLflow, W&B, etc.
        print(f"Commit: {commit_hash[:8]}")

def notify_on_milestone(state: TrainingState, commit_hash: str):
    """Send notification when reaching milestones."""
    if state.metrics.get("accuracy", 0) > 0.95:
        print("ðŸŽ‰ Achieved 95% accuracy!")
        # Send email, Slack message, etc.

# Register callbacks
manager.register_checkpoint_callback(log_checkpoint)
manager.register_checkpoint_callback(notify_on_milestone)

# List registered callbacks
print(manager.list_callbacks())  # ['log_checkpoint', 'notify_on_milestone']

# Unregister a callback
manager.unregister_checkpoint_callback(log_checkpoint)

# Clear all callbacks
manager.clear_callbacks()
''',
    '''
# View checkpoint history
for checkpoint in manager.checkpoint_history:
    print(f"Epoch {checkpoint['epoch']}: {checkpoint['commit_hash'][:8]}")
    print(f"  Metrics: {checkpoint['metrics']}")
    print(f"  Best: {checkpoint['is_best']}")

# Get current best checkpoint
print(f"Best metric value: {manager.best_metric_value}")
print(f"Best checkpoint: {manager.best_checkpoint_hash[:8]}")

# List only best checkpoints
best_checkpoints = manager.list_checkpoints(only_best=True)

# Get info about specific checkpoint
info = manager.get_checkpoint_info(commit_hash)
''',
    '''
{
    "commit_hash": "a7f3c2d1...",
    "epoch": 10,
    "global_step": 5000,
    "timestamp": "2025-01-15T10:30:45",
    "metrics": {"accuracy": 0.95, "val_loss": 0.189},
    "is_best": True,
}
''',
    '''
# Compare two checkpoints
diff = manager.diff_checkpoints("a7f3c2d1", "b8e4f5a2")

print(f"Checkpoints identical: {diff['identical']}")
print(f"Changed weights: {diff['changed']}")
print(f"Added weights: {diff['added']}")
print(f"Removed weights: {diff['removed']}")

# Similarity scores for changed weights
for name, similarity in diff['similarity'].items():
    print(f"  {name}: {similarity:.4f} cosine similarity")
''',
    '''
{
    "identical": False,           # True if all weights match exactly
    "changed": ["layer1.weight"], # Weights with different values
    "added": ["layer3.weight"],   # Weights only in second checkpoint
    "removed": ["old_layer"],     # Weights only in first checkpoint
    "similarity": {               # Cosine similarity for changed weights
        "layer1.weight": 0.9823
    }
}
''',
]

# what the guide leaves to the reader: a model, an optimizer and a scheduler
PREAMBLE = """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
"""


def test_section_6_3_in_sequence(in_tmp, capsys):
    ns = run(PREAMBLE, {})
    run(G63[0], ns)  # initialization
    run(G63[1], ns)  # should_save_checkpoint
    run(G63[2], ns)  # save_checkpoint
    first = ns["commit_hash"]
    assert first and "Checkpoint saved: " in capsys.readouterr().out
    # load_checkpoint: the guide's placeholder hash becomes the short hash of the checkpoint just saved
    run(G63[3], ns, **{GUIDE_HASH: repr(first[:8])})
    assert ns["commit_hash"] == first and torch.is_tensor(ns["model"][0].weight)
    run(G63[4], ns)  # callbacks
    assert "['log_checkpoint', 'notify_on_milestone']" in capsys.readouterr().out
    run(G63[5], ns)  # history
    out = capsys.readouterr().out
    assert "Epoch 5: " in out and "Best: True" in out and f"Best checkpoint: {first[:8]}" in out
    assert ns["info"]["commit_hash"] == first
    run(G63[6], {})  # the history structure (a dict literal)
    # diff_checkpoints: a second checkpoint to compare with (the guide's two placeholder hashes)
    with torch.no_grad():
        ns["model"][0].weight.add_(0.01)
    state = ns["TrainingState"](epoch=6, global_step=1200, loss=0.3, metrics={"accuracy": 0.93})
    second = ns["manager"].save_checkpoint(ns["PyTorchIntegration"].model_to_weights(ns["model"]), state, force=True)
    run(G63[7], ns, **{GUIDE_HASH: repr(first[:8]), GUIDE_HASH_2: repr(second[:8])})
    diff = ns["diff"]
    assert not diff["identical"] and diff["changed"] == ["0.weight"] and 0.9 < diff["similarity"]["0.weight"] <= 1
    assert "0.weight: " in capsys.readouterr().out
    run(G63[8], {})  # the return-value structure (a dict literal)
