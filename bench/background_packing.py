"""What background packing costs a training loop: steps/s of a small torch MLP (AdamW) that saves every
``--every`` steps through ``CheckpointManager`` (sync), against the same loop without checkpoints.

Modes, interleaved round by round (the machine is shared, so each round compares runs made minutes apart):
``none`` (no checkpoints), ``background`` (the default: packing in the low-priority packer thread),
``bg-normal`` (the alternative not picked: a normal-priority thread running ``repack(max_commits=1)`` on the
shared I/O pool), ``inline`` (the old behaviour: ``repack(max_commits=1)`` inside the save) and ``nopack``
(commits only). ``python bench/background_packing.py [--steps 200 --every 20 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("none", "background", "bg-normal", "inline", "nopack")


def make_mlp(width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(128, width), torch.nn.GELU()]
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def run(mode: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from coral import Repository
    from coral.integrations.pytorch import PyTorchIntegration
    from coral.training import CheckpointConfig, CheckpointManager, TrainingState

    model = make_mlp(args.width, args.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    repo = mgr = None
    if mode != "none":
        repo = Repository(work / mode, init=True)
        cfg = CheckpointConfig(save_every_n_steps=args.every, save_random_state=False,
                               use_incremental_saves=mode == "background")
        mgr = CheckpointManager(repo, cfg, experiment_name="bench")
    side: list[threading.Thread] = []
    saves: list[float] = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x = torch.randn(args.batch, 128, generator=gen)
        y = torch.randint(0, 10, (args.batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mgr is not None and step % args.every == 0:
            s0 = time.perf_counter()
            state = TrainingState(epoch=0, global_step=step, loss=float(loss),
                                  optimizer_state=PyTorchIntegration.save_optimizer_state(opt))
            mgr.save_checkpoint(PyTorchIntegration.model_to_weights(model), state)
            if mode == "inline":
                repo.repack(max_commits=1)
            elif mode == "bg-normal":
                for t in side:
                    t.join()
                side = [threading.Thread(target=repo.repack, kwargs={"max_commits": 1}, daemon=True)]
                side[0].start()
            saves.append(time.perf_counter() - s0)
    loop = time.perf_counter() - t0
    for t in side:
        t.join()
    if mgr is not None:
        mgr.wait()
    total = time.perf_counter() - t0
    out = {"mode": mode, "steps_per_s": args.steps / loop, "steps_per_s_incl_wait": args.steps / total,
           "median_save_s": statistics.median(saves) if saves else 0.0}
    if repo is not None:
        st = repo.stats()
        out["stored_vs_raw"] = st["stored_bytes"] / max(1, st["unique_bytes"])
        repo.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--modes", default=",".join(MODES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the loop keeps one core busy; the packer competes for the other
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes.split(",")}
    for r in range(args.rounds):
        for mode in results:
            work = Path(tempfile.mkdtemp(prefix="coral-bgpack-"))
            try:
                res = run(mode, work, args)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            results[mode].append(res)
            print(json.dumps({"round": r, **res}), flush=True)
    base = statistics.median(x["steps_per_s"] for x in results.get("none", [])) if results.get("none") else None
    params = sum(q.numel() for q in make_mlp(args.width, args.depth).parameters())
    print(f"\nMLP {params / 1e6:.1f}M params, AdamW, save every {args.every} steps, {args.steps} steps, "
          f"median of {args.rounds} rounds")
    for mode, rs in results.items():
        sps = [x["steps_per_s"] for x in rs]
        rel = f"{statistics.median(sps) / base:.1%} of no-checkpoint" if base else ""
        print(f"{mode:11s} {statistics.median(sps):7.2f} steps/s (min {min(sps):.2f}, max {max(sps):.2f}) {rel}; "
              f"incl. final wait {statistics.median(x['steps_per_s_incl_wait'] for x in rs):.2f}; "
              f"median save {statistics.median(x['median_save_s'] for x in rs) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
