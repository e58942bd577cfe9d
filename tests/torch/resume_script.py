"""Train a tiny model with Checkpointer: run until ``--stop`` epochs are done, resuming what the repo holds.

Used by test_exact_resume.py in real subprocesses: ``python resume_script.py REPO OUT --stop N --total T``.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch
from coral.integrations.pytorch import Checkpointer, ResumableLoader
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("out")
    ap.add_argument("--stop", type=int, required=True, help="exit after this many epochs in total")
    ap.add_argument("--total", type=int, default=6)
    ap.add_argument("--no-data-state", action="store_true", help="do not hand the loader to the Checkpointer")
    ap.add_argument("--mid-epoch", type=int, default=0, help="also stop after this many batches of epoch --stop")
    ap.add_argument("--resumable", action="store_true", help="wrap the loader in ResumableLoader")
    ap.add_argument("--push-to", help="push each checkpoint to this remote in the background")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    g = torch.Generator().manual_seed(1234)
    xs = torch.randn(96, 8)
    ys = torch.randint(0, 3, (96,))
    loader = DataLoader(TensorDataset(xs, ys), batch_size=16, shuffle=True, generator=g)
    data = ResumableLoader(loader) if args.resumable else loader
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.total)
    step_every = 1 if args.mid_epoch else None

    with Checkpointer(
        model, args.repo, "exact", optimizer=opt, scheduler=sched, every_n_epochs=1, every_n_steps=step_every,
        resume=True, data=None if args.no_data_state else data, push_to=args.push_to,
    ) as ckpt:
        step = ckpt.global_step
        for epoch in range(ckpt.epoch, args.total):
            if epoch == args.stop and not args.mid_epoch:
                break
            model.train()
            for i, (x, y) in enumerate(data):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * random.random() + 1e-3 * float(np.random.rand())
                loss.backward()
                opt.step()
                step += 1
                if args.mid_epoch:
                    ckpt.log(epoch, step, loss=loss.item())  # every_n_steps=1: a checkpoint per batch
                    if epoch == args.stop and i + 1 == args.mid_epoch:
                        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
                        sys.exit(0)  # "crash" mid-epoch, right after the checkpoint
            sched.step()
            if not args.mid_epoch:
                ckpt.log(epoch, step, loss=loss.item())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
