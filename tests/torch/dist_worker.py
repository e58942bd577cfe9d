"""One rank of a real torch.distributed (gloo, CPU) job: ``python dist_worker.py SCENARIO REPO OUT``.

The rank comes from torchrun-style environment variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
each rank writes what it saw to ``OUT/rank<r>.json`` (and full tensors to ``OUT/*.pt`` for comparisons).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def model_fn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 8, generator=g)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def sharded(world: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = model_fn()
    mesh = init_device_mesh("cpu", (world,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    return model, opt


def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of model + optimizer, unsharded (collective), flat names."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = {f"model/{k}": v.clone() for k, v in msd.items()}
    for fqn, st in osd.get("state", {}).items():  # full state dicts land on rank 0 only
        for k, v in st.items():
            out[f"optim/{fqn}/{k}"] = torch.as_tensor(v).clone()
    return out


def main() -> None:
    scenario, repo_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    import coral_torch
    from coral import Repository
    from coral_torch import dcp as cdcp

    report: dict = {"rank": rank, "world": world}
    if scenario == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model_fn())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ckpt = coral_torch.Checkpointer(model, repo_path, "ddp", optimizer=opt)
        hashes = []
        for epoch in range(3):
            train_step(model, opt, epoch)
            hashes.append(ckpt.save(epoch))
        report["hashes"] = hashes
        report["oneoff"] = coral_torch.save(model, repo_path, "one-off")["commit_hash"]
        again = coral_torch.Checkpointer(model, repo_path, "ddp", optimizer=opt, resume=True)
        report["resumed"] = again.resumed_from
        from coral.training import CheckpointConfig

        trainer = coral_torch.CoralTrainer(model, repo_path, "ddp-trainer", CheckpointConfig(save_every_n_epochs=1))
        trainer.set_optimizer(opt)
        report["trainer"] = [trainer.epoch_end(e) for e in range(2)]
        report["trainer_loaded"] = trainer.load_checkpoint()
    elif scenario == "fsdp_save":
        model, opt = sharded(world)
        for step in range(2):
            train_step(model, opt, step)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(model, opt)
        writer = cdcp.CoralWriter(repo_path, branch="main", message=f"fsdp {world} ranks")
        dcp.save({"model": msd, "optim": osd}, storage_writer=writer)
        report["commit"] = writer.commit_hash
        ref = full_state(model, opt)
        if rank == 0:
            torch.save(ref, out / "ref.pt")
    elif scenario == "fsdp_load":
        model, opt = sharded(world)
        train_step(model, opt, 99)  # optimizer state exists (and differs) before the load
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, opt)
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, storage_reader=cdcp.CoralReader(repo_path, "main"))
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        got = full_state(model, opt)
        if rank == 0:
            torch.save(got, out / f"got{world}.pt")
    elif scenario == "ckpt_dcp":
        model, opt = sharded(world)
        ckpt = coral_torch.Checkpointer(model, repo_path, "fsdp", optimizer=opt, distributed="dcp", resume=True)
        report["resumed"] = ckpt.resumed_from
        report["start_epoch"] = ckpt.epoch
        hashes = []
        for epoch in range(ckpt.epoch, ckpt.epoch + 2):
            train_step(model, opt, epoch)
            hashes.append(ckpt.log(epoch, loss=float(epoch)))
        report["hashes"] = hashes
        ref = full_state(model, opt)
        if rank == 0:
            torch.save(ref, out / f"ckpt{world}.pt")
    elif scenario == "ckpt_dcp_check":
        model, opt = sharded(world)
        ckpt = coral_torch.Checkpointer(model, repo_path, "fsdp", optimizer=opt, distributed="dcp", resume=True)
        report["resumed"] = ckpt.resumed_from
        report["start_epoch"] = ckpt.epoch
        got = full_state(model, opt)
        if rank == 0:
            torch.save(got, out / f"resumed{world}.pt")
    elif scenario == "timeout":
        # rank 1 never reaches the save point: rank 0 must fail fast with a clear error, not hang
        model = torch.nn.parallel.DistributedDataParallel(model_fn())
        if rank == 0:
            from coral.errors import RankTimeoutError

            ckpt = coral_torch.Checkpointer(model, repo_path, "late", barrier_timeout=2)
            try:
                ckpt.save(0)
                report["error"] = None
            except RankTimeoutError as exc:
                report["error"] = str(exc)
            (out / "rank0.json").write_text(json.dumps(report))
        else:
            import time

            time.sleep(8)
            (out / "rank1.json").write_text(json.dumps(report))
        os._exit(0)
    elif scenario == "kill_saves":
        # saves forever; the test SIGKILLs one rank in the middle of a sharded save
        model, opt = sharded(world)
        ckpt = coral_torch.Checkpointer(
            model, repo_path, "fsdp", optimizer=opt, distributed="dcp", resume=True, barrier_timeout=30
        )
        epoch = ckpt.epoch
        while True:
            train_step(model, opt, epoch)
            commit = ckpt.log(epoch, loss=float(epoch))
            if rank == 0:
                with open(out / "reported.txt", "a") as f:
                    f.write(f"{commit} {epoch}\n")
                    f.flush()
                    os.fsync(f.fileno())
            epoch += 1
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    Repository  # noqa: B018 - imported to fail early when coral is missing
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    # leave without running gloo's teardown: a peer that exits first can make it abort ("terminate called")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
