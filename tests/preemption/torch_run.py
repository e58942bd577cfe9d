"""A plain PyTorch loop with Checkpointer, for the preemption tests (run in a real subprocess).

``python torch_run.py REPO OUT [--user-handler FILE] [--sleep S] [--push-to REMOTE]
[--deadline S]``: resumes what REPO holds, prints
``step N`` after each step, stops when ``ckpt.should_stop`` (a preemption) and writes the final weights to OUT.
"""

from __future__ import annotations

import argparse
import random
import signal
import time

import numpy as np
import torch
from coral.integrations.pytorch import Checkpointer, ResumableLoader
from coral.training import CheckpointConfig
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--user-handler", default=None, help="install a SIGTERM handler first; it writes this file")
    ap.add_argument("--push-to", default=None, help="a remote of REPO each checkpoint is pushed to (push_to)")
    ap.add_argument("--deadline", type=float, default=90.0, help="preemption_deadline, seconds")
    args = ap.parse_args()
    if args.user_handler:
        def user_handler(signum: int, frame: object) -> None:
            with open(args.user_handler, "w") as f:
                f.write(f"user handler ran for {signum}\n")

        signal.signal(signal.SIGTERM, user_handler)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    g = torch.Generator().manual_seed(1234)
    xs, ys = torch.randn(96, 8), torch.randint(0, 3, (96,))
    data = ResumableLoader(DataLoader(TensorDataset(xs, ys), batch_size=16, shuffle=True, generator=g))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    # no save rule fires within the run: the only checkpoint is the preemption one
    config = CheckpointConfig(save_every_n_steps=10_000, preemption_deadline=args.deadline)
    with Checkpointer(model, args.repo, "pre", optimizer=opt, data=data, config=config, resume=True,
                      push_to=args.push_to) as ckpt:
        step = ckpt.global_step
        for epoch in range(ckpt.epoch, args.epochs):
            for x, y in data:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * random.random()
                loss.backward()
                opt.step()
                step += 1
                ckpt.log(epoch, step, loss=loss.item())
                if ckpt.should_stop:
                    print(f"stopped at step {step}", flush=True)
                    break
                print(f"step {step}", flush=True)
                time.sleep(args.sleep)
            if ckpt.should_stop:
                break
        else:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    # leaving the with block after a preemption raised SystemExit(143)


if __name__ == "__main__":
    main()
