"""A 2-rank gloo DDP loop with Checkpointer, for the preemption test: ``python ddp_run.py REPO [--dcp]`` with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. Prints ``step N`` after each step. ``--dcp``: the model is
sharded with FSDP2 (``fully_shard`` on a CPU mesh) and saved through ``Checkpointer(distributed="dcp")``.

Every rank builds a Checkpointer on the same repository; the preemption flag is agreed by an all-reduce in
``log()`` and only rank 0 commits (once coral-torch's rank-aware Checkpointer is merged, it commits on rank 0
for every save; this script saves nothing but the preemption checkpoint, so it needs no more).
"""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist
from coral.integrations.pytorch import Checkpointer
from torch import nn


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    sharded = "--dcp" in sys.argv[2:]
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
        ddp = model
    else:
        ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(rank)
    ckpt = Checkpointer(model, sys.argv[1], "ddp", optimizer=opt, every_n_steps=10_000,
                        distributed="dcp" if sharded else None)
    try:
        with ckpt:
            for step in range(1, 400):
                x = torch.randn(4, 8, generator=g)
                loss = ddp(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                ckpt.log(0, step, loss=loss.item())
                if ckpt.should_stop:
                    print(f"stopped at step {step}", flush=True)
                    break
                print(f"step {step}", flush=True)
                time.sleep(0.05)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
