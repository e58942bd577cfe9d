"""bench/compare.py's plain-PyTorch cells: one AdamW job checkpointed by torch.save, safetensors, DCP or Coral.

Each function runs in its own process (the parent starts it) and ends with ``emit``. Cases: ``fp32``,
``bf16`` (the model and AdamW's moments in bfloat16) and ``frozen90`` (only the last block's two Linear
weights train: ~10% of the weight bytes; the optimizer holds state for those only).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import _workload as wl
import torch
from _compare_common import (
    CHECKPOINTS,
    RESUME_FROM,
    SIZES,
    Clock,
    digest_arrays,
    emit,
    fsync_path,
    restore_step,
    torch_items,
)
from _compare_common import tree_bytes as stored

ALTERNATIVES = ["none", "torch.save", "safetensors", "dcp", "dcp-async", "coral", "coral-async"]
CASE_ALTERNATIVES = {"fp32": ALTERNATIVES, "bf16": ALTERNATIVES, "frozen90": ALTERNATIVES}  # every peer, every case
LABELS = {
    "none": "no checkpoints",
    "torch.save": "`torch.save` full state + fsync",
    "safetensors": "safetensors weights + `torch.save` optimizer + fsync",
    "dcp": "`torch.distributed.checkpoint.save`",
    "dcp-async": "`torch.distributed.checkpoint.async_save`",
    "coral": "Coral `Checkpointer`",
    "coral-async": "Coral `Checkpointer`, `async_save=True`",
}


def build(spec: dict[str, Any]) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, wl.Teacher]:
    size = SIZES[spec["size"]]
    wl.BATCH = spec.get("batch", wl.BATCH)
    wl.D, wl.H, wl.BLOCKS = size["torch_d"], size["torch_h"], size["torch_blocks"]
    torch.manual_seed(0)
    model = wl.make_model(0)
    if spec["case"] == "bf16":
        model = model.to(torch.bfloat16)
    if spec["case"] == "frozen90":
        last = model[wl.BLOCKS]  # the last feed-forward block
        for p in model.parameters():
            p.requires_grad_(False)
        last.fc1.weight.requires_grad_(True)
        last.fc2.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    steps = size["every"] * CHECKPOINTS
    sched = wl.warmup_cosine(opt, steps, max(1, steps // 10))
    return model, opt, sched, wl.Teacher(1)


def batch(
    teacher: wl.Teacher, step: int, dtype: torch.dtype, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` from its own seed, so a resumed run sees the same data without a generator to restore;
    ``seed`` overrides it (the held-out batch)."""
    g = torch.Generator().manual_seed(10_000 + step if seed is None else seed)
    x = torch.randn(wl.BATCH, wl.IN, generator=g)
    return x.to(dtype), (torch.tanh(x @ teacher.w1) @ teacher.w2).argmax(-1)


def heldout_loss(model, teacher: wl.Teacher) -> float:
    """The loss on a fixed held-out batch (no grad, no RNG drawn): the metric that picks the best checkpoint."""
    x, y = batch(teacher, 0, next(model.parameters()).dtype, seed=7)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x).float(), y))


def train_steps(model, opt, sched, teacher, first: int, last: int, after_step) -> None:
    dtype = next(model.parameters()).dtype
    model.train()
    for step in range(first, last + 1):
        x, y = batch(teacher, step, dtype)
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        after_step(step, float(loss.detach()))


def state_digest(model, opt, sched) -> str:
    return digest_arrays(torch_items("model", model.state_dict()) + torch_items("optim", opt.state_dict()["state"])
                         + [("sched/last_epoch", torch.tensor(float(sched.last_epoch)).numpy())])


def _durable(*paths: Path) -> None:
    for p in paths:
        fsync_path(p)
    fsync_path(paths[0].parent)


class Saver:
    """One alternative's save, restore and retention, on a folder of its own."""

    def __init__(self, alt: str, root: Path, model, opt, sched) -> None:
        self.alt, self.root, self.model, self.opt, self.sched = alt, root, model, opt, sched
        self.future: Any = None
        self.ckpt: Any = None
        if alt.startswith("coral"):
            from coral.integrations.pytorch import Checkpointer
            from coral.training import CheckpointConfig

            # the best by held-out loss is tracked (and tagged) by Coral itself: the "best" restore asks for it
            config = CheckpointConfig(save_every_n_steps=10**9, async_save=alt == "coral-async",
                                      save_on_preemption=False, save_on_best_metric="val_loss")
            self.ckpt = Checkpointer(model, root / "coral", "bench", optimizer=opt, scheduler=sched, config=config)

    # ---- save -----------------------------------------------------------------------------------------
    def save(self, step: int, loss: float, val_loss: float) -> None:
        alt, root = self.alt, self.root
        if alt == "torch.save":
            path = root / f"step{step}.pt"
            torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                        "sched": self.sched.state_dict(), "step": step}, path)
            _durable(path)
        elif alt == "safetensors":
            from safetensors.torch import save_file

            w, o = root / f"step{step}.safetensors", root / f"step{step}.optim.pt"
            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(w))
            torch.save({"optim": self.opt.state_dict(), "sched": self.sched.state_dict(), "step": step}, o)
            _durable(w, o)
        elif alt in ("dcp", "dcp-async"):
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            msd, osd = get_state_dict(self.model, self.opt)
            state = {"model": msd, "optim": osd}
            folder = root / f"step{step}"
            torch.save(self.sched.state_dict(), root / f"step{step}.sched.pt")
            _durable(root / f"step{step}.sched.pt")  # as durable as DCP's own files (it fsyncs them)
            if alt == "dcp":
                dcp.save(state, checkpoint_id=str(folder))
            else:
                if self.future is not None:
                    self.future.result()  # DCP allows one async save in flight: the loop waits for the last
                self.future = dcp.async_save(state, checkpoint_id=str(folder))
        elif alt.startswith("coral"):
            self.ckpt.save(0, step, loss=loss, val_loss=val_loss)

    def finish(self) -> None:
        if self.future is not None:
            self.future.result()
        if self.ckpt is not None:
            self.ckpt.close()  # waits for pending saves, not for background packing (a job's exit does not)

    def settle(self) -> None:
        """Let background packing finish (outside the wall time) so the stored bytes are the packed ones."""
        if self.ckpt is not None:
            self.ckpt.repo.wait()

    # ---- restore --------------------------------------------------------------------------------------
    def _coral_commit(self, step: int) -> str:
        for entry in self.ckpt.manager.list_checkpoints():
            if entry.get("global_step") == step:
                return str(entry["commit_hash"])
        raise KeyError(step)

    def restore(self, step: int, best: bool = False) -> int:
        """Load checkpoint ``step`` (Coral with ``best``: its own best, through ``load_best``); returns the step."""
        alt, root = self.alt, self.root
        if alt == "torch.save":
            ck = torch.load(root / f"step{step}.pt", weights_only=True)
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optim"])
            self.sched.load_state_dict(ck["sched"])
        elif alt == "safetensors":
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(str(root / f"step{step}.safetensors")))
            ck = torch.load(root / f"step{step}.optim.pt", weights_only=True)
            self.opt.load_state_dict(ck["optim"])
            self.sched.load_state_dict(ck["sched"])
        elif alt in ("dcp", "dcp-async"):
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            msd, osd = get_state_dict(self.model, self.opt)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=str(root / f"step{step}"))
            set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
            self.sched.load_state_dict(torch.load(root / f"step{step}.sched.pt", weights_only=True))
        elif alt.startswith("coral"):
            from coral.integrations.pytorch import PyTorchIntegration

            if best:
                ck = self.ckpt.manager.load_checkpoint(load_best=True)
                step = ck["state"].global_step
            else:
                ck = self.ckpt.manager.load_checkpoint(commit_hash=self._coral_commit(step))
            PyTorchIntegration.weights_to_model(ck["weights"], self.model)
            PyTorchIntegration.load_optimizer_state(self.opt, ck["state"].optimizer_state)
            PyTorchIntegration.load_scheduler_state(self.sched, ck["state"].scheduler_state)
        return step

    # ---- retention ------------------------------------------------------------------------------------
    def keep_last(self, steps: list[int], n: int) -> None:
        drop = steps[:-n]
        if self.alt.startswith("coral"):
            repo = self.ckpt.repo
            for s in drop:
                repo.prune(self._coral_commit(s))
            repo.gc(expire_reflog="now")
            repo.wait()
            return
        for s in drop:
            for p in self.root.glob(f"step{s}.*"):
                p.unlink()
            shutil.rmtree(self.root / f"step{s}", ignore_errors=True)


def preload(alt: str) -> None:
    """Import the alternative's modules before any timing: a restore is timed from the open, not the import."""
    if alt.startswith("dcp"):
        import torch.distributed.checkpoint  # noqa: F401
        import torch.distributed.checkpoint.state_dict  # noqa: F401
    elif alt == "safetensors":
        import safetensors.torch  # noqa: F401
    elif alt.startswith("coral"):
        import coral.integrations.pytorch  # noqa: F401
        import coral.training  # noqa: F401


def run(spec: dict[str, Any]) -> None:
    preload(spec["alt"])
    root = Path(spec["dir"])
    root.mkdir(parents=True, exist_ok=True)
    every = SIZES[spec["size"]]["every"]
    steps = [every * i for i in range(1, CHECKPOINTS + 1)]
    model, opt, sched, teacher = build(spec)
    alt, phase = spec["alt"], spec["phase"]
    t_open = time.perf_counter()
    saver = Saver(alt, root, model, opt, sched)  # opening Coral's repository counts in the restore time
    t_open = time.perf_counter() - t_open
    out: dict[str, Any] = {}
    if phase == "train":
        clock, digests, val = Clock(), {}, {}

        def after(step: int, loss: float) -> None:
            if step % every == 0:
                digests[step] = state_digest(model, opt, sched)  # outside the timing
                val[step] = heldout_loss(model, teacher)
                if alt != "none":
                    t = time.perf_counter()
                    saver.save(step, loss, val[step])
                    clock.saves.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        train_steps(model, opt, sched, teacher, 1, steps[-1], after)
        saver.finish()
        wall = time.perf_counter() - t0
        saver.settle()
        out = {"wall_s": wall, "blocked_s": clock.saves, "bytes_10": stored(root),
               "digests": {str(k): v for k, v in digests.items()}, "val": {str(k): v for k, v in val.items()},
               "params": sum(p.numel() for p in model.parameters()),
               "state_mib": sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 2**20}
    elif phase == "restore":
        step = restore_step(spec, steps)
        t = time.perf_counter()
        step = saver.restore(step, best=spec["which"] == "best")
        out = {"restore_s": time.perf_counter() - t + t_open, "digest": state_digest(model, opt, sched), "step": step}
    elif phase == "retain":
        saver.keep_last(steps, 3)
        out = {"bytes_3": stored(root)}
    elif phase == "resume":
        start = steps[RESUME_FROM - 1]
        saver.restore(start)
        train_steps(model, opt, sched, teacher, start + 1, steps[-1], lambda s, loss: None)
        out = {"digest": state_digest(model, opt, sched), "step": steps[-1]}
    emit(out)

