"""User guide section 6.4 (TrainingState), every block as written; the state of the optimizer block survives a
save/load and a checkpoint and comes back usable by torch."""

from __future__ import annotations

import numpy as np
import torch

from .conftest import run

G64 = [
    '''
from coral.training import TrainingState

state = TrainingState(
    epoch=10,                    # Current epoch number
    global_step=5000,            # Total training steps across all epochs
    learning_rate=0.0001,        # Current learning rate
    loss=0.234,                  # Current loss value
    metrics={                    # Additional metrics
        "accuracy": 0.95,
        "val_loss": 0.189,
        "val_accuracy": 0.93,
        "f1_score": 0.94,
    },
)
''',
    '''
state = TrainingState(
    epoch=10,
    global_step=5000,
    learning_rate=0.0001,
    loss=0.234,

    # Optimizer state (e.g., Adam momentum buffers)
    optimizer_state=optimizer.state_dict(),

    # Scheduler state (e.g., StepLR counter)
    scheduler_state=scheduler.state_dict(),

    # Random state for reproducibility
    random_state={
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all(),
        "numpy": np.random.get_state(),
    },
)
''',
    '''
state = TrainingState(
    epoch=10,
    global_step=5000,
    learning_rate=0.0001,
    loss=0.234,

    # Training configuration
    batch_size=32,
    gradient_accumulation_steps=4,
    max_epochs=100,
    max_steps=50000,
)
''',
    '''
state = TrainingState(
    epoch=10,
    global_step=5000,
    learning_rate=0.0001,
    loss=0.234,

    # Metadata
    model_name="ResNet50",
    dataset_name="ImageNet",
    experiment_name="resnet50_lr_sweep",
    notes="Testing learning rate 0.001 with cosine annealing",
)
''',
    '''
# Save to file
state.save("/path/to/state.json")

# Load from file
loaded_state = TrainingState.load("/path/to/state.json")

# Convert to dictionary
state_dict = state.to_dict()

# Create from dictionary
state = TrainingState.from_dict(state_dict)
''',
    '''
# Update metrics dynamically
state.update_metrics(accuracy=0.96, val_accuracy=0.94)

# Format a summary string
summary = state.format_summary()
# "Epoch: 10 | Step: 5000 | Learning Rate: 1.00e-04 | Loss: 0.2340 | accuracy: 0.9600"
''',
]

PREAMBLE = """
import numpy as np
import torch
from torch import nn
model = nn.Linear(4, 2)
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
model(torch.randn(3, 4)).sum().backward()
optimizer.step()
"""


def test_section_6_4_blocks(in_tmp, capsys):
    ns = run(PREAMBLE, {})
    for code in G64[:4]:
        run(code, ns)
    # serialization: the guide's "/path/to/state.json" is a placeholder; a file in the working folder instead
    run(G64[4], ns, **{'"/path/to/state.json"': '"state.json"'})
    assert ns["loaded_state"].to_dict() == ns["state"].to_dict()
    run(G64[5], ns)
    want = "Epoch: 10 | Step: 5000 | Learning Rate: 1.00e-04 | Loss: 0.2340 | accuracy: 0.9600"
    assert ns["summary"].startswith(want)


def test_optimizer_block_state_round_trips_as_torch(in_tmp):
    ns = run(PREAMBLE, {})
    run(G64[0], ns)
    run(G64[1], ns)
    state = ns["state"]
    # "reconstructed on load": the file round trip and a checkpoint give torch tensors back
    state.save("state.json")
    from coral.training import CheckpointConfig, CheckpointManager, TrainingState

    for loaded in (TrainingState.load("state.json"),):  # noqa: B007
        exp_avg = loaded.optimizer_state["state"][0]["exp_avg"]
        assert torch.is_tensor(exp_avg) and torch.equal(exp_avg, state.optimizer_state["state"][0]["exp_avg"])
        assert torch.is_tensor(loaded.random_state["torch"])
        assert isinstance(loaded.random_state["numpy"], tuple) and loaded.random_state["numpy"][0] == "MT19937"
    from coral import Repository

    manager = CheckpointManager(Repository("r", init=True), CheckpointConfig(), experiment_name="e")
    manager.save_checkpoint({"w": np.zeros(2, np.float32)}, state, force=True)
    back = manager.load_checkpoint()["state"]
    ns["optimizer"].load_state_dict(back.optimizer_state)
    ns["scheduler"].load_state_dict(back.scheduler_state)
    torch.set_rng_state(back.random_state["torch"])
    from coral.integrations.pytorch import PyTorchIntegration

    want = torch.rand(3)
    PyTorchIntegration.set_random_state(back.random_state)  # section 6.9's restore
    assert torch.equal(torch.rand(3), want)
