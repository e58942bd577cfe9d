"""A tiny real Lightning setup shared by the tests, and a command line to run it in a NEW process.

``python lightning_app.py --repo R --branch B --max-epochs N [--resume coral://last] --out DIR [--devices 2]``
trains, then writes the final weights, optimizer/scheduler state and loop counters to ``DIR/rank<r>.npz`` and
``DIR/rank<r>.json`` (numpy arrays and JSON: nothing pickled).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")


class TinyModule(pl.LightningModule):
    """Linear-ReLU-Dropout-Linear with Adam and StepLR: dropout and shuffling make RNG state matter."""

    def __init__(self, lr: float = 0.05, hidden: int = 8, gamma: float = 0.7) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.25), nn.Linear(hidden, 1))
        self.note = "tiny"

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=self.hparams.gamma)
        return [opt], [sched]


class ScriptedModule(TinyModule):
    """Logs ``score`` from a fixed list, one value per validation run, to drive save_on_best deterministically."""

    def __init__(self, scores: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores = list(scores)
        self.val_runs = 0

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self.log("score", float(self.scores[self.val_runs]))
            self.val_runs += 1


class MetricsRecorder(pl.Callback):
    """Records the logged metrics and the weights at every epoch end (to compare with what Coral committed)."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.weights: list[dict[str, np.ndarray]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.weights.append({k: v.detach().cpu().numpy().copy() for k, v in pl_module.state_dict().items()})


def loaders(n: int = 64, batch_size: int = 8, loader_seed: int | None = None) -> tuple[DataLoader, DataLoader]:
    """``loader_seed``: the training loader shuffles with its own ``generator=`` (the README's pattern)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    own = None if loader_seed is None else torch.Generator().manual_seed(loader_seed)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=own)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=batch_size)
    return train, val


def trainer(callbacks: list[Any], root: str | os.PathLike[str], max_epochs: int, **kwargs: Any) -> pl.Trainer:
    opts: dict[str, Any] = {
        "accelerator": "cpu", "devices": 1, "max_epochs": max_epochs, "logger": False, "enable_progress_bar": False,
        "enable_model_summary": False, "enable_checkpointing": False, "default_root_dir": str(root),
        "num_sanity_val_steps": 0, "deterministic": True,
    }
    opts.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **opts)


def snapshot(trainer_: pl.Trainer, module: pl.LightningModule) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Everything that must match bit for bit after training: weights, optimizer, scheduler, counters, RNG."""
    arrays: dict[str, np.ndarray] = {f"w/{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    opt = trainer_.optimizers[0].state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            arrays[f"opt/{pid}/{k}"] = v.detach().cpu().numpy().copy() if torch.is_tensor(v) else np.asarray(v)
    arrays["rng/torch"] = torch.get_rng_state().numpy().copy()
    info = {
        "global_step": trainer_.global_step,
        "current_epoch": trainer_.current_epoch,
        "lr": [g["lr"] for g in trainer_.optimizers[0].param_groups],
        "sched": {k: v for k, v in trainer_.lr_scheduler_configs[0].scheduler.state_dict().items() if k != "_last_lr"},
    }
    return arrays, info


def main(argv: list[str] | None = None) -> int:
    from coral_lightning import CoralCallback

    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--branch", default="run")
    p.add_argument("--max-epochs", type=int, required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--loader-seed", type=int, default=None)
    args = p.parse_args(argv)

    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = TinyModule()
    train, val = loaders(loader_seed=args.loader_seed)
    cb = CoralCallback(repo_path=args.repo, init=True, branch=args.branch, save_every_n_epochs=1, save_on_best="val_loss")
    extra: dict[str, Any] = {}
    if args.devices > 1:
        extra = {"devices": args.devices, "strategy": "ddp", "use_distributed_sampler": True}
    t = trainer([cb], Path(args.out) / "root", args.max_epochs, **extra)
    t.fit(module, train, val, ckpt_path=args.resume)
    arrays, info = snapshot(t, module)
    info.update(rank=t.global_rank, world_size=t.world_size, last_commit_hash=cb.last_commit_hash)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"rank{t.global_rank}.npz", **arrays)
    (out / f"rank{t.global_rank}.json").write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
