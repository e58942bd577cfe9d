"""Coral demo: train a small real PyTorch model and commit a checkpoint every epoch into a local repository.

Run with ``make demo`` (or ``python examples/demo.py REPO_DIR``), then look at the history with ``coral log``.
"""

from __future__ import annotations

import sys

import torch
from coral import Repository
from coral.integrations.pytorch import PyTorchIntegration
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main(repo_dir: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2048, 32)
    y = (x[:, :4].sum(dim=1) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)

    repo = Repository(repo_dir, init=True)
    config = CheckpointConfig(
        save_every_n_epochs=1,
        save_on_best_metric="accuracy",
        minimize_metric=False,
        keep_last_n_checkpoints=4,
        commit_message_template="epoch {epoch}: loss={loss:.4f} accuracy={accuracy:.3f}",
    )
    manager = CheckpointManager(repo, config, model_name="demo-mlp", experiment_name="demo")

    step = 0
    for epoch in range(5):
        model.train()
        total = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item()
            step += 1
        scheduler.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
        state = TrainingState(
            epoch=epoch,
            global_step=step,
            learning_rate=scheduler.get_last_lr()[0],
            loss=total / len(loader),
            metrics={"accuracy": accuracy},
            optimizer_state=PyTorchIntegration.save_optimizer_state(optimizer),
            scheduler_state=PyTorchIntegration.save_scheduler_state(scheduler),
        )
        commit = manager.save_checkpoint(PyTorchIntegration.model_to_weights(model), state)
        print(f"{state.format_summary()}  ->  commit {commit[:8] if commit else '(skipped)'}")
    manager.wait()
    print(f"best accuracy {manager.best_metric_value:.3f} at {manager.best_checkpoint_hash[:8]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-repo")
