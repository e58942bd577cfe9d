"""CoralTrainer with a real signal sent to this process: saves at the step reached, marked; ``should_stop``;
``close()`` exits 128 + signum; ``load_checkpoint`` resumes mid-epoch bit-exact against an uninterrupted run."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from coral import Repository  # noqa: E402
from coral.integrations.pytorch import CoralTrainer, ResumableLoader  # noqa: E402
from coral.training import CheckpointConfig  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

EPOCHS = 2  # 6 batches each


@pytest.fixture
def restore_usr1():
    before = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, before)


def setup(repo: Path) -> tuple[CoralTrainer, Any, Any, Any]:
    g = torch.Generator().manual_seed(7)
    xs, ys = torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    loader = ResumableLoader(DataLoader(TensorDataset(xs, ys), batch_size=16, shuffle=True,
                                        generator=torch.Generator().manual_seed(1234)))
    cfg = CheckpointConfig(save_every_n_steps=1000, preemption_signals=("SIGUSR1",))
    trainer = CoralTrainer(model, repo, "t", cfg)
    trainer.set_optimizer(opt)
    trainer.set_data(loader)
    return trainer, model, opt, loader


def train(trainer: CoralTrainer, model: Any, opt: Any, loader: Any, signal_after: int | None = None) -> None:
    for epoch in range(trainer.start_epoch, EPOCHS):
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            trainer.step(loss.item())
            if trainer.should_stop:
                return
            if trainer.global_step == signal_after:
                os.kill(os.getpid(), signal.SIGUSR1)
        trainer.epoch_end(epoch)


def test_coral_trainer_preemption_marks_stops_exits_and_resumes_bit_exact(tmp_path: Path, restore_usr1) -> None:
    trainer, model, opt, loader = setup(tmp_path / "full")
    train(trainer, model, opt, loader)
    trainer.close()
    full = {k: v.clone() for k, v in model.state_dict().items()}

    trainer, model, opt, loader = setup(tmp_path / "r")
    train(trainer, model, opt, loader, signal_after=8)  # epoch 1, batch 2 of 6: mid-epoch
    assert trainer.should_stop and trainer.global_step == 9
    with pytest.raises(SystemExit) as info:
        trainer.close()
    assert info.value.code == 128 + signal.SIGUSR1
    head = Repository(tmp_path / "r").log()[0]
    assert head.metadata["preempted"] == {"signal": "SIGUSR1", "step": 9} and head.metadata["global_step"] == 9

    trainer, model, opt, loader = setup(tmp_path / "r")
    assert trainer.load_checkpoint() == head.hash and trainer.global_step == 9 and trainer.start_epoch == 1
    train(trainer, model, opt, loader)
    trainer.close()
    assert trainer.global_step == 12
    got = model.state_dict()
    assert all(full[k].numpy().tobytes() == got[k].numpy().tobytes() for k in full)
