"""bench/compare.py's Lightning cells: one pl.Trainer job with ModelCheckpoint (optionally on AsyncCheckpointIO)
or with Coral's CoralCallback. An epoch is K steps (the data repeats), so each checkpoint ends an epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import _workload as wl
import torch
from _compare_common import CHECKPOINTS, RESUME_FROM, SIZES, Clock, digest_arrays, emit, restore_step, torch_items
from _compare_common import tree_bytes as stored
from coral_lightning._compat import pl

ALTERNATIVES = ["none", "modelcheckpoint", "modelcheckpoint-async", "coral", "coral-async"]
CASE_ALTERNATIVES = {"fp32": ALTERNATIVES}
LABELS = {
    "none": "no checkpoints",
    "modelcheckpoint": "`ModelCheckpoint(every_n_train_steps=K, save_top_k=-1)`",
    "modelcheckpoint-async": "`ModelCheckpoint` + `AsyncCheckpointIO`",
    "coral": "Coral `CoralCallback(save_every_n_steps=K)`",
    "coral-async": "Coral `CoralCallback(save_every_n_steps=K, async_save=True)`",
}


class Lit(pl.LightningModule):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.net = wl.make_model(0)
        self.steps = steps

    def training_step(self, batch: Any, _idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.01)
        sched = wl.warmup_cosine(opt, self.steps, max(1, self.steps // 10))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def examples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = wl.Teacher(1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, wl.IN, generator=g)
    return x, (torch.tanh(x @ teacher.w1) @ teacher.w2).argmax(-1)


def loader(every: int) -> torch.utils.data.DataLoader:
    x, y = examples(every * wl.BATCH, 5)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=wl.BATCH, shuffle=False)


def heldout_loss(module: pl.LightningModule) -> float:
    """The loss on a fixed held-out batch (no grad, no RNG drawn): the metric that picks the best checkpoint."""
    x, y = examples(wl.BATCH, 7)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(module.net(x), y))


def digest(module: pl.LightningModule, opt: Any, sched: Any) -> str:
    return digest_arrays(torch_items("model", module.net.state_dict()) + torch_items("optim", opt.state_dict()["state"])
                         + [("sched/last_epoch", torch.tensor(float(sched.last_epoch)).numpy())])


class Probe(pl.Callback):
    """Marks each step's start; at checkpoint steps records the state's digest and the held-out loss (time left
    out of the gaps)."""

    def __init__(self, every: int, clock: Clock) -> None:
        self.every, self.clock, self.digests, self.val, self.skip = every, clock, {}, {}, 0.0

    def on_train_batch_start(self, trainer: Any, *_a: Any) -> None:
        self.clock.marks.append(time.perf_counter() - self.skip)

    def on_train_batch_end(self, trainer: Any, module: Any, *_a: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            t = time.perf_counter()
            self.digests[step] = digest(module, trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler)
            self.val[step] = heldout_loss(module)
            self.skip += time.perf_counter() - t

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self.clock.marks.append(time.perf_counter() - self.skip)


def trainer(alt: str, root: Path, steps: int, every: int, callbacks: list[Any], plugins: list[Any]) -> pl.Trainer:
    cbs = list(callbacks)
    if alt.startswith("modelcheckpoint"):
        cbs.append(pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=every, save_top_k=-1,
                                                filename="{step}", save_on_train_epoch_end=False))
        if alt.endswith("async"):
            plugins = [*plugins, pl.plugins.io.AsyncCheckpointIO()]
    elif alt.startswith("coral"):
        from coral.integrations.lightning import CoralCallback

        cbs.append(CoralCallback(repo_path=str(root / "coral"), init=True, save_every_n_steps=every, branch="bench",
                                 save_on_preemption=False, async_save=alt == "coral-async"))
    return pl.Trainer(max_steps=steps, max_epochs=CHECKPOINTS, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=alt.startswith("modelcheckpoint"), enable_progress_bar=False,
                      enable_model_summary=False, callbacks=cbs, plugins=plugins or None, num_sanity_val_steps=0)


def coral_commit(root: Path, step: int) -> str:
    from coral import Repository

    repo = Repository(str(root / "coral"))
    for info in repo.log("bench"):
        md = info.metadata if hasattr(info, "metadata") else info["metadata"]
        if md.get("global_step") == step:
            return info.hash if hasattr(info, "hash") else info["hash"]
    raise KeyError(step)


def ckpt_path(alt: str, root: Path, step: int) -> str:
    if alt.startswith("coral"):
        return "coral://" + coral_commit(root, step)
    return str(root / "ckpt" / f"step={step}.ckpt")


def run(spec: dict[str, Any]) -> None:
    size = SIZES[spec["size"]]
    wl.BATCH = spec.get("batch", wl.BATCH)
    wl.D, wl.H, wl.BLOCKS = size["small_d"], size["small_h"], size["small_blocks"]
    torch.manual_seed(0)
    every, alt, root = size["every"], spec["alt"], Path(spec["dir"])
    steps = [every * i for i in range(1, CHECKPOINTS + 1)]
    root.mkdir(parents=True, exist_ok=True)
    module = Lit(steps[-1])
    if alt.startswith("coral"):  # imported before any timing
        import coral.integrations.lightning  # noqa: F401
        import coral_lightning.io  # noqa: F401
    phase, out = spec["phase"], {}
    if phase == "train":
        clock = Clock()
        probe = Probe(every, clock)
        tr = trainer(alt, root, steps[-1], every, [probe], [])
        t0 = time.perf_counter()
        tr.fit(module, loader(every))
        wall = time.perf_counter() - t0
        for cb in tr.callbacks:  # background packing done (outside the wall time): the stored bytes are packed
            if hasattr(cb, "repo") and hasattr(cb.repo, "wait"):
                cb.repo.wait()
        out = {"wall_s": wall, "blocked_s": clock.from_marks(every) if alt != "none" else [],
               "bytes_10": stored(root), "digests": {str(k): v for k, v in probe.digests.items()},
               "val": {str(k): v for k, v in probe.val.items()}, "params": sum(p.numel() for p in module.parameters()),
               "state_mib": sum(v.numel() * v.element_size() for v in module.state_dict().values()) / 2**20}
    elif phase == "restore":
        step = restore_step(spec, steps)
        conf = module.configure_optimizers()
        opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        t = time.perf_counter()
        if alt.startswith("coral"):
            from coral_lightning.io import CoralCheckpointIO

            ck = CoralCheckpointIO(str(root / "coral")).load_checkpoint(ckpt_path(alt, root, step))
        else:
            ck = pl.plugins.TorchCheckpointIO().load_checkpoint(ckpt_path(alt, root, step))
        module.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer_states"][0])
        sched.load_state_dict(ck["lr_schedulers"][0])
        out = {"restore_s": time.perf_counter() - t, "digest": digest(module, opt, sched), "step": step}
    elif phase == "retain":
        if alt.startswith("coral"):
            from coral import Repository

            repo = Repository(str(root / "coral"))
            for s in steps[:-3]:
                repo.prune(coral_commit(root, s))
            repo.gc(expire_reflog="now")
            repo.wait()
        else:
            for s in steps[:-3]:
                (root / "ckpt" / f"step={s}.ckpt").unlink()
        out = {"bytes_3": stored(root)}
    elif phase == "resume":
        plugins = []
        if alt.startswith("coral"):
            from coral_lightning.io import CoralCheckpointIO

            plugins = [CoralCheckpointIO(str(root / "coral"))]
        tr = trainer("none", root, steps[-1], every, [], plugins)
        tr.fit(module, loader(every), ckpt_path=ckpt_path(alt, root, steps[RESUME_FROM - 1]))
        out = {"digest": digest(module, tr.optimizers[0], tr.lr_scheduler_configs[0].scheduler), "step": steps[-1]}
    emit(out)

