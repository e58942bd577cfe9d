"""User guide section 6.8: the Lightning, HuggingFace and framework-agnostic blocks as written (the two PyTorch
blocks run in tests/torch/test_guide_examples.py)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import run

G68 = [
    '''
from coral.integrations.pytorch import CoralTrainer, PyTorchIntegration

# Direct API (lower-level)
weights = PyTorchIntegration.model_to_weights(model)
repo.stage_weights(weights)
repo.commit("Save checkpoint")

# Trainer API (higher-level)
trainer = CoralTrainer(model, repo, experiment_name="my_experiment")
trainer.set_optimizer(optimizer)
trainer.epoch_end(epoch)  # Automatic checkpointing
''',
    '''
from coral.integrations.pytorch import load, save

# Save model to repository
result = save(model, repo, "Checkpoint after epoch 10")
print(f"Saved commit: {result['commit_hash']}")
print(f"Weights saved: {result['weights_saved']}")

# Load model from repository
result = load(model, repo, commit="a7f3c2d1", strict=True)
print(f"Loaded {len(result['loaded'])} weights")
print(f"Matched: {result['matched']}")
''',
    '''
import pytorch_lightning as pl
from coral.integrations.lightning import CoralCallback
# Alias also available:
# from coral.integrations.lightning import CoralLightningCallback

# Create Coral callback with repository object
from coral import Repository
repo = Repository("./lightning_model", init=True)

coral_callback = CoralCallback(
    repo=repo,                  # Can also use repo_path="./lightning_model"
    save_every_n_epochs=1,
    save_on_best="val_loss",
    mode="min",
    branch="experiment_1",
    push_to=None,  # Optional: push to remote after each save
)

# Add to Lightning Trainer
trainer = pl.Trainer(
    max_epochs=50,
    callbacks=[coral_callback],
)

# Train normally - Coral handles checkpointing automatically
trainer.fit(model, train_dataloader, val_dataloader)

# Load best model from Coral
coral_callback.load_from_coral(model, commit_ref=None)
''',
    '''
from transformers import Trainer, TrainingArguments
from coral.integrations.hf_trainer import CoralTrainerCallback
# Alias also available:
# from coral.integrations.hf_trainer import CoralHFCallback

# Create Coral callback with repository object
from coral import Repository
repo = Repository("./bert_finetuned", init=True)

coral_callback = CoralTrainerCallback(
    repo=repo,                  # Can also use repo_path="./bert_finetuned"
    save_every_n_steps=1000,
    save_on_best="eval_accuracy",
    mode="max",
    branch="bert_finetuning",
)

# Configure HuggingFace Trainer
training_args = TrainingArguments(
    output_dir="./hf_output",
    num_train_epochs=3,
    per_device_train_batch_size=16,
    evaluation_strategy="steps",
    eval_steps=500,
)

# Create Trainer with Coral callback
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    callbacks=[coral_callback],
)

# Train - Coral handles versioning
trainer.train()

# Load best model
coral_callback.load_from_coral(model)
''',
    '''
from coral import Repository
from coral.training import CheckpointManager, CheckpointConfig, TrainingState
from coral.core.weight_tensor import WeightTensor, WeightMetadata
import numpy as np

# 1. Initialize repository and checkpoint manager
repo = Repository("./custom_framework", init=True)
config = CheckpointConfig(
    save_every_n_epochs=5,
    save_on_best_metric="val_loss",
    minimize_metric=True,
)
manager = CheckpointManager(repo, config, model_name="CustomModel")

# 2. Training loop
for epoch in range(num_epochs):
    # ... your training code ...

    # Convert your model weights to Coral format
    weights = {}
    for name, param in your_model.get_parameters():
        weights[name] = WeightTensor(
            data=param.astype(np.float32),
            metadata=WeightMetadata(
                name=name,
                shape=param.shape,
                dtype=param.dtype,
            ),
        )

    # Create training state
    state = TrainingState(
        epoch=epoch,
        global_step=global_step,
        learning_rate=current_lr,
        loss=train_loss,
        metrics={"val_loss": val_loss, "val_accuracy": val_accuracy},
    )

    # Save checkpoint (automatic based on config)
    commit_hash = manager.save_checkpoint(weights, state)

    if commit_hash:
        print(f"Saved checkpoint: {commit_hash[:8]}")

# 3. Load checkpoint for inference
checkpoint = manager.load_checkpoint(load_best=True)
if checkpoint:
    for name, weight_tensor in checkpoint["weights"].items():
        your_model.set_parameter(name, weight_tensor.data)
''',
]

LIGHTNING_PREAMBLE = """
import torch
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)
    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

torch.manual_seed(0)
x = torch.randn(16, 4)
y = x.sum(1, keepdim=True)
model = Tiny()
train_dataloader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
val_dataloader = DataLoader(TensorDataset(x, y), batch_size=8)
"""


def test_lightning_block(in_tmp):
    pytest.importorskip("pytorch_lightning")
    ns = run(LIGHTNING_PREAMBLE, {})
    run(G68[2], ns)  # max_epochs=50 as written: a 2-batch epoch is quick
    repo = ns["repo"]
    log = repo.log(branch="experiment_1")
    assert len(log) >= 50 and ns["trainer"].current_epoch == 50
    # load_from_coral(model, commit_ref=None) loads the branch head into the model
    head = repo.get_weights(log[0].hash)
    assert np.array_equal(ns["model"].net.weight.detach().numpy(), head["net.weight"].data)


HF_PREAMBLE = """
import torch
from transformers import BertConfig, BertForSequenceClassification

class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 50, (n, 8), generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.y[i]}

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
    max_position_embeddings=16, num_labels=2))
train_dataset = TinyDataset(32, 0)
eval_dataset = TinyDataset(8, 1)
"""


def test_hf_block_as_written_meets_the_transformers_5_rename(in_tmp):
    transformers = pytest.importorskip("transformers")
    ns = run(HF_PREAMBLE, {})
    if int(transformers.__version__.split(".")[0]) >= 5:
        # as written: transformers 5 renamed evaluation_strategy (docs/hf.md, README say so)
        with pytest.raises(TypeError, match="evaluation_strategy"):
            run(G68[3], dict(ns))
    # with the new name (and use_cpu so the test machine's accelerator does not matter) it runs end to end;
    # eval_steps=500 > the 6 steps here, so the save_on_best metric never appears and only the end is saved
    run(G68[3], ns, **{'evaluation_strategy="steps"': 'eval_strategy="steps", use_cpu=True'})
    assert ns["trainer"].state.global_step == 6
    assert ns["repo"].log(branch="bert_finetuning")


AGNOSTIC_PREAMBLE = """
import numpy as np

class YourModel:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.params = {"dense/kernel": rng.standard_normal((4, 3), dtype=np.float32),
                       "dense/bias": np.zeros(3, np.float32)}
    def get_parameters(self):
        return list(self.params.items())
    def set_parameter(self, name, value):
        self.params[name] = value

your_model = YourModel()
num_epochs = 10
global_step = 0
current_lr = 0.01
"""


def test_framework_agnostic_block(in_tmp, capsys):
    ns = run(AGNOSTIC_PREAMBLE, {})
    # the loop's "# ... your training code ..." is the reader's: losses that improve, then worsen
    code = G68[4].replace(
        "    # ... your training code ...\n",
        "    # ... your training code ...\n"
        "    train_loss = val_loss = abs(epoch - 5) + 1.0\n"
        "    val_accuracy = 1 / val_loss\n"
        "    global_step += 10\n",
    )
    assert code != G68[4]
    run(code, ns)
    out = capsys.readouterr().out
    assert out.count("Saved checkpoint: ") >= 2  # every 5 epochs and on each improvement
    assert ns["checkpoint"]["state"].metrics["val_loss"] == 1.0  # the best (epoch 5)
    assert ns["your_model"].params["dense/kernel"].dtype == np.float32


def test_framework_agnostic_block_with_float64_parameters_fails_in_one_clear_line(in_tmp):
    # the block casts the data to float32 but declares dtype=param.dtype: with float64 parameters that is a
    # contradiction Coral refuses, naming the field and both dtypes (README "Choices made")
    from coral.errors import InvalidArgumentError

    ns = run(AGNOSTIC_PREAMBLE, {})
    ns["your_model"].params = {"w": np.zeros(3)}
    code = G68[4].replace("    # ... your training code ...\n", "    train_loss = val_loss = val_accuracy = 1.0\n")
    with pytest.raises(InvalidArgumentError, match="metadata.dtype='float64': data has dtype float32"):
        run(code, ns)
