"""User guide section 6.2 (CheckpointConfig), every block as written."""

from __future__ import annotations

import pytest

from .conftest import run

G62 = [
    '''
from coral.training import CheckpointConfig

config = CheckpointConfig(
    # Save checkpoint every 5 epochs
    save_every_n_epochs=5,

    # Save checkpoint every 1000 training steps
    save_every_n_steps=1000,

    # Save when validation loss improves
    save_on_best_metric="val_loss",
    minimize_metric=True,  # True for loss, False for accuracy
)
''',
    '''
config = CheckpointConfig(
    # Keep only the last 10 checkpoints
    keep_last_n_checkpoints=10,

    # Keep the best 3 checkpoints by metric
    keep_best_n_checkpoints=3,

    # Keep checkpoints at epoch 10, 20, 30, etc.
    keep_checkpoint_every_n_epochs=10,
)
''',
    '''
config = CheckpointConfig(
    # Save optimizer state (for exact training resumption)
    save_optimizer_state=True,

    # Save scheduler state (learning rate schedules)
    save_scheduler_state=True,

    # Save random state (for reproducibility)
    save_random_state=True,

    # Use incremental saves (leverage Coral's deduplication)
    use_incremental_saves=True,
)
''',
    '''
config = CheckpointConfig(
    # Automatically create commits for checkpoints
    auto_commit=True,

    # Template for commit messages (supports {epoch}, {step}, {loss}, and any metric)
    commit_message_template="Checkpoint at epoch {epoch}, step {step}, loss={loss:.4f}",

    # Automatically tag best checkpoints
    tag_best_checkpoints=True,
)
''',
    '''
config = CheckpointConfig(
    save_on_best_metric="val_loss",
    minimize_metric=True,

    # Stop training after 5 epochs without improvement
    early_stopping_patience=5,

    # Require at least 0.001 improvement to count as progress
    early_stopping_threshold=0.001,
)
''',
    '''
manager = CheckpointManager(repo, config, model_name="MyModel")

for epoch in range(num_epochs):
    # ... training ...
    manager.save_checkpoint(weights, state)

    # Check if training should stop
    if manager.should_stop_early:
        print(f"Early stopping at epoch {epoch}")
        print(f"No improvement for {manager.no_improvement_count} checkpoints")
        break
''',
    '''
# Save frequently, keep everything
research_config = CheckpointConfig(
    save_every_n_epochs=1,
    save_every_n_steps=500,
    save_on_best_metric="val_loss",
    minimize_metric=True,
    keep_last_n_checkpoints=None,  # Keep all
    save_optimizer_state=True,
    save_scheduler_state=True,
    save_random_state=True,
    auto_commit=True,
    tag_best_checkpoints=True,
)
''',
    '''
# Save selectively, aggressive cleanup
production_config = CheckpointConfig(
    save_every_n_epochs=10,
    save_on_best_metric="val_accuracy",
    minimize_metric=False,
    keep_last_n_checkpoints=3,
    keep_best_n_checkpoints=5,
    keep_checkpoint_every_n_epochs=50,
    save_optimizer_state=False,  # Don't need to resume
    save_scheduler_state=False,
    save_random_state=False,
    auto_commit=True,
    tag_best_checkpoints=True,
)
''',
    '''
# Balance checkpoint frequency with storage
long_run_config = CheckpointConfig(
    save_every_n_epochs=5,
    save_on_best_metric="val_loss",
    minimize_metric=True,
    keep_last_n_checkpoints=5,
    keep_best_n_checkpoints=10,
    keep_checkpoint_every_n_epochs=25,
    save_optimizer_state=True,
    use_incremental_saves=True,  # Leverage delta encoding
    auto_commit=True,
)
''',
    '''
# Save only when performance improves
metric_only_config = CheckpointConfig(
    save_on_best_metric="val_f1_score",
    minimize_metric=False,
    keep_best_n_checkpoints=10,
    save_optimizer_state=True,
    auto_commit=True,
    tag_best_checkpoints=True,
    commit_message_template="Best F1: {val_f1_score:.4f} at epoch {epoch}",
)
''',
]

PREAMBLE = """
import numpy as np
from coral import Repository
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
repo = Repository("./guide_repo", init=True)
weights = {"layer.weight": np.zeros((4, 4), np.float32)}
state = TrainingState(epoch=0, global_step=0, loss=1.0, metrics={"val_loss": 1.0})
num_epochs = 3
"""

# the retention example names no metric: it ranks by loss once branch split-manager (issue 28) is merged
NEEDS_LOSS_RANKING = {1}


@pytest.mark.parametrize("index", range(len(G62)))
def test_config_block(in_tmp, index):
    if index == 5:  # the early-stopping loop: it uses the config of the block before it
        ns = run(PREAMBLE, {})
        run(G62[4], ns)
        run(G62[5], ns)
        assert ns["manager"].checkpoint_history and ns["manager"].no_improvement_count >= 1
        return
    try:
        ns = run(G62[index], run(PREAMBLE, {}))
    except Exception:
        if index in NEEDS_LOSS_RANKING:
            pytest.xfail("keep_best_n_checkpoints without a metric ranks by loss on branch split-manager")
        raise
    config = next(v for k, v in ns.items() if k.endswith("config") and not k.startswith("Checkpoint"))
    assert config.auto_commit is True
