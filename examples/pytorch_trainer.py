"""The user guide's "Complete Training Loop Example" (section 6.6) with small sizes so it runs in seconds.

    python examples/pytorch_trainer.py [REPO_DIR]      (default ./mlp_mnist)
"""

# ruff: noqa: I001, PLR0402  (the imports are the guide's, as users copy them)
import sys

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

from coral import Repository
from coral.integrations.pytorch import CoralTrainer
from coral.training import CheckpointConfig

REPO_DIR = sys.argv[1] if len(sys.argv) > 1 else "./mlp_mnist"


# 1. Define model
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.layers(x)


# 2. Create data loaders (the guide uses 10000/2000 samples; 640/128 keep this quick)
train_dataset = TensorDataset(torch.randn(640, 784), torch.randint(0, 10, (640,)))
val_dataset = TensorDataset(torch.randn(128, 784), torch.randint(0, 10, (128,)))
train_loader = DataLoader(train_dataset, batch_size=32, shuffle=True)
val_loader = DataLoader(val_dataset, batch_size=32)

# 3. Initialize Coral
model = MLP()
repo = Repository(REPO_DIR, init=True)
config = CheckpointConfig(
    save_every_n_epochs=2,
    save_on_best_metric="val_accuracy",
    minimize_metric=False,
    keep_last_n_checkpoints=5,
    keep_best_n_checkpoints=3,
)

trainer = CoralTrainer(
    model=model,
    repository=repo,
    experiment_name="mlp_baseline",
    checkpoint_config=config,
)

# 4. Setup training
optimizer = optim.Adam(model.parameters(), lr=0.001)
scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
criterion = nn.CrossEntropyLoss()

trainer.set_optimizer(optimizer)
trainer.set_scheduler(scheduler)

# 5. Training loop (the guide runs 20 epochs)
num_epochs = 4

for epoch in range(num_epochs):
    # Training
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        optimizer.zero_grad()
        output = model(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()

        # Update trainer
        if batch_idx % 10 == 0:
            pred = output.argmax(dim=1)
            accuracy = pred.eq(target).float().mean().item()
            trainer.step(loss=loss.item(), accuracy=accuracy)

    # Validation
    model.eval()
    val_loss = 0
    val_correct = 0
    with torch.no_grad():
        for data, target in val_loader:
            output = model(data)
            val_loss += criterion(output, target).item()
            pred = output.argmax(dim=1)
            val_correct += pred.eq(target).sum().item()

    val_loss /= len(val_loader)
    val_accuracy = val_correct / len(val_dataset)

    # Update metrics and end epoch
    trainer.update_metrics(val_loss=val_loss, val_accuracy=val_accuracy)
    trainer.epoch_end(epoch)

    print(f"Epoch {epoch}: val_loss={val_loss:.4f}, val_accuracy={val_accuracy:.4f}")

# 6. Training complete
print("\n=== Training Summary ===")
summary = trainer.get_training_summary()
for key, value in summary.items():
    if key != "metrics":
        print(f"{key}: {value}")

# List checkpoints
checkpoints = trainer.list_checkpoints()
print(f"\nSaved {len(checkpoints)} checkpoints")

# Load best model
trainer.load_checkpoint(load_best=True)
print("Loaded best checkpoint for inference")
