"""A real pl.Trainer with CoralCallback, for the preemption tests (run in a real subprocess).

``python lightning_run.py REPO OUT [--resume coral://last] [--sleep S]``: prints ``step N`` after each batch and
writes the final weights to OUT. The training loader is stateful (``state_dict``/``load_state_dict``), so
Lightning restores the position inside the epoch.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from coral_lightning import CoralCallback
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")


class StatefulLoader:
    """A shuffling DataLoader that Lightning can checkpoint mid-epoch: the epoch's generator state and how
    many batches were trained on (counted by the module: Lightning fetches one batch ahead)."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.g = torch.Generator().manual_seed(1234)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=self.g)
        self.consumed = 0
        self.start = self.g.get_state()
        self._resume = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        if self._resume:
            self.g.set_state(self.start)
            skip, self._resume = self.consumed, False
        else:
            self.start, skip, self.consumed = self.g.get_state(), 0, 0
        for i, batch in enumerate(self.loader):
            if i >= skip:
                yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "start": self.start.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed, self.start, self._resume = int(state["consumed"]), state["start"].clone(), True


class Tiny(pl.LightningModule):
    def __init__(self, loader: StatefulLoader, pause: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.25), nn.Linear(8, 1))
        self.loader, self.pause = loader, pause

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(self.pause)  # the signal lands mid-step
        self.loader.consumed += 1  # trained on: a checkpoint at this batch's end resumes after it
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        print(f"step {self.trainer.global_step}", flush=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("out")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(7, workers=True, verbose=False)
    g = torch.Generator().manual_seed(99)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    loader = StatefulLoader(TensorDataset(x, y), batch_size=8)
    module = Tiny(loader, args.sleep)
    cb = CoralCallback(repo_path=args.repo, init=True, branch="run", save_every_n_epochs=100)
    trainer = pl.Trainer(
        callbacks=[cb], accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=args.out + ".root",
        num_sanity_val_steps=0, deterministic=True, use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=loader, ckpt_path=args.resume)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
