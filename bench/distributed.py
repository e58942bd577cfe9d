"""2-rank sharded save/load: Coral's DCP storage (CoralWriter/CoralReader) against DCP's FileSystemWriter/Reader.

``python bench/distributed.py [--mb 64] [--checkpoints 5] [--json PATH]`` starts 2 gloo ranks on CPU, shards
an MLP with FSDP2 (``fully_shard``), trains a few AdamW steps between checkpoints, and times ``dcp.save``
and ``dcp.load`` (barrier to barrier, the slower rank) with each backend on the same state; it then reports
the bytes each backend stored over all checkpoints. Timings only; the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from coral_torch.dcp import CoralReader, CoralWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    width = int((args.mb * 2**20 / 4 / 8) ** 0.5)  # 8 square layers of fp32
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(8)])
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    work = Path(args.work)
    rows: dict[str, list[float]] = {"coral_save": [], "fs_save": [], "coral_load": [], "fs_load": []}

    def timed(key: str, fn) -> None:
        dist.barrier()
        t = time.perf_counter()
        fn()
        dist.barrier()
        rows[key].append(time.perf_counter() - t)

    for i in range(args.checkpoints):
        x = torch.randn(32, width)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd}
        coral_w = CoralWriter(work / "coral", message=f"ckpt {i}")
        fs_w, fs_r = dcp.FileSystemWriter(work / "fs" / str(i)), dcp.FileSystemReader(work / "fs" / str(i))
        timed("coral_save", lambda s=state, w=coral_w: dcp.save(s, storage_writer=w))
        timed("fs_save", lambda s=state, w=fs_w: dcp.save(s, storage_writer=w))
        timed("coral_load", lambda s=state: dcp.load(s, storage_reader=CoralReader(work / "coral")))
        timed("fs_load", lambda s=state, r=fs_r: dcp.load(s, storage_reader=r))
    if rank == 0:
        state_mb = sum(p.numel() for p in model.parameters()) * 4 * 3 / 2**20  # weights + exp_avg + exp_avg_sq
        out = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
        out |= {"state_mib": state_mb, "coral_bytes": _size(work / "coral" / ".coral"), "fs_bytes": _size(work / "fs")}
        Path(args.result).write_text(json.dumps(out))
    dist.barrier()
    os._exit(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=64.0, help="size of the model's fp32 weights")
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        return rank_main(args)
    work = Path(tempfile.mkdtemp(prefix="coral-bench-dist-"))
    result = work / "result.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = [sys.executable, __file__, "--rank", "--work", str(work), "--result", str(result),
               "--mb", str(args.mb), "--checkpoints", str(args.checkpoints)]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a rank failed: exit codes {codes}")
    r = json.loads(result.read_text())
    shutil.rmtree(work, ignore_errors=True)
    mib = 2**20
    print(f"2 ranks, FSDP2, {r['state_mib']:.0f} MiB state per checkpoint, {args.checkpoints} checkpoints (median s)")
    print(f"| save | Coral {r['coral_save']:.3f} s | DCP FileSystemWriter {r['fs_save']:.3f} s |")
    print(f"| load | Coral {r['coral_load']:.3f} s | DCP FileSystemReader {r['fs_load']:.3f} s |")
    print(f"| stored | Coral {r['coral_bytes'] / mib:.1f} MiB | DCP files {r['fs_bytes'] / mib:.1f} MiB |")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
