"""Put 10 training checkpoints on a remote: Coral (push after each save) against uploading 10 torch.save files.

``python bench/remotes.py [REMOTE_URL]``: the remote is a fresh folder by default (any store URL works, e.g. an
``s3://`` prefix when the S3 backend is installed; then the torch.save files go through fsspec to the same
place). Prints bytes sent and wall times, and the time to resume on a "new machine": ``clone --depth 1`` + load
against downloading the newest torch.save file + ``torch.load``. Markdown rows for BENCHMARKS.md at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from coral import Repository
from coral.integrations.pytorch import Checkpointer

CHECKPOINTS, STEPS_APART = 10, 20


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(16384, 512),  # frozen (a pretrained part): 32 MiB that never changes
        torch.nn.Linear(512, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 512),
    )
    model[0].weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, opt


def train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        x = torch.randint(0, 16384, (32,))
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def remote_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coral-remote-bench-"))
    remote_url = sys.argv[1] if len(sys.argv) > 1 else str(work / "remote")
    if "://" not in remote_url:
        Repository(remote_url, init=True).close()
    with Repository(work / "trainer", init=True) as repo:
        repo.add_remote("origin", remote_url)
    before = remote_bytes(Path(remote_url)) if "://" not in remote_url else 0

    model, opt = model_and_optimizer()
    t0 = time.perf_counter()
    with Checkpointer(model, work / "trainer", "bench", optimizer=opt, push_to="origin") as ckpt:
        for epoch in range(CHECKPOINTS):
            train_steps(model, opt, STEPS_APART)
            ckpt.log(epoch, (epoch + 1) * STEPS_APART)
    coral_s = time.perf_counter() - t0  # includes waiting for the last push
    coral_bytes = remote_bytes(Path(remote_url)) - before if "://" not in remote_url else -1

    model, opt = model_and_optimizer()
    files = work / "torch-remote"
    files.mkdir()
    sent = 0
    t0 = time.perf_counter()
    for epoch in range(CHECKPOINTS):
        train_steps(model, opt, STEPS_APART)
        local = work / f"ckpt-{epoch}.pt"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, local)
        data = local.read_bytes()
        with open(files / local.name, "wb") as fh:  # the upload: a durable copy on the other side
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        sent += len(data)
    torch_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    clone = Repository.clone(remote_url, work / "new-machine", depth=1)
    arrays = clone.load_arrays()
    clone.close()
    resume_coral_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    newest = (files / f"ckpt-{CHECKPOINTS - 1}.pt").read_bytes()
    (work / "downloaded.pt").write_bytes(newest)
    torch.load(work / "downloaded.pt", weights_only=True)
    resume_torch_s = time.perf_counter() - t0

    mib = 1024 * 1024
    print(f"| Coral, push after each of {CHECKPOINTS} saves | {coral_bytes / mib:.1f} MiB | {coral_s:.2f} s |")
    print(f"| {CHECKPOINTS} torch.save files uploaded | {sent / mib:.1f} MiB | {torch_s:.2f} s |")
    print(f"| resume: clone --depth 1 + load ({len(arrays)} tensors) | | {resume_coral_s:.2f} s |")
    print(f"| resume: download newest torch.save + torch.load | {len(newest) / mib:.1f} MiB | {resume_torch_s:.2f} s |")


if __name__ == "__main__":
    main()
