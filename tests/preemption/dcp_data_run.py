"""A 2-rank FSDP2 loop saved through ``Checkpointer(distributed="dcp")`` with a ResumableLoader over a
DistributedSampler, for the mid-epoch resume test: ``python dcp_data_run.py REPO [--resume]`` with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. Prints ``batch EPOCH ID ID ...`` and ``step N`` after each step;
trains two epochs of 8 steps per rank."""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist
from coral.integrations.pytorch import Checkpointer, ResumableLoader
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

EPOCHS = 2


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.arange(64)
    dataset = TensorDataset(ids, torch.randn(64, 8, generator=torch.Generator().manual_seed(1)))
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = ResumableLoader(DataLoader(dataset, batch_size=4, sampler=sampler))
    ckpt = Checkpointer(model, sys.argv[1], "dcp-data", optimizer=opt, data=loader, every_n_steps=10_000,
                        distributed="dcp", resume="--resume" in sys.argv[2:])
    step = ckpt.global_step
    try:
        with ckpt:
            for epoch in range(ckpt.epoch, EPOCHS):
                sampler.set_epoch(epoch)
                for batch_ids, x in loader:
                    loss = model(x).pow(2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                    print("batch", epoch, *batch_ids.tolist(), flush=True)
                    ckpt.log(epoch, step, loss=loss.item())
                    if ckpt.should_stop:
                        print(f"stopped at step {step}", flush=True)
                        return
                    print(f"step {step}", flush=True)
                    time.sleep(0.05)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
