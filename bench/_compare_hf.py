"""bench/compare.py's HuggingFace cells: one transformers.Trainer job on a tiny GPT-2 built from a config, with
the Trainer's own `save_strategy="steps"` or with Coral's CoralTrainerCallback (sync and async)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from _compare_common import CHECKPOINTS, RESUME_FROM, SIZES, Clock, digest_arrays, emit, restore_step, torch_items
from _compare_common import tree_bytes as stored
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

ALTERNATIVES = ["none", "trainer", "coral", "coral-async"]
CASE_ALTERNATIVES = {"fp32": ALTERNATIVES}
LABELS = {
    "none": "no checkpoints",
    "trainer": "`Trainer(save_strategy=\"steps\", save_steps=K)`",
    "coral": "Coral `CoralTrainerCallback(save_every_n_steps=K)`",
    "coral-async": "Coral `CoralTrainerCallback(..., async_save=True)`",
}
BATCH, SEQ, VOCAB = 8, 64, 4096


def model(size: dict[str, Any]) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=size["small_d"], n_layer=size["hf_layers"],
                     n_head=4, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        # a learnable stream: each sequence counts up from a random start, modulo the vocabulary
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        self.ids = (start + torch.arange(SEQ)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def digest(m: Any, opt: Any, sched: Any) -> str:
    return digest_arrays(torch_items("model", m.state_dict()) + torch_items("optim", opt.state_dict()["state"])
                         + [("sched/last_epoch", torch.tensor(float(sched.last_epoch)).numpy())])


def heldout_loss(m: Any) -> float:
    """The loss on a fixed held-out batch (no grad; dropout is off): the metric that picks the best checkpoint."""
    ids = Tokens(BATCH, seed=7).ids
    with torch.no_grad():
        return float(m(input_ids=ids, labels=ids).loss)


class Probe(TrainerCallback):
    """Marks each step's start; at checkpoint steps records the state's digest and the held-out loss (time left
    out of the gaps)."""

    def __init__(self, every: int, clock: Clock) -> None:
        self.every, self.clock, self.digests, self.val, self.skip = every, clock, {}, {}, 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.clock.marks.append(time.perf_counter() - self.skip)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                    lr_scheduler: Any = None, **kw: Any) -> None:
        if state.global_step % self.every == 0:
            t = time.perf_counter()
            self.digests[state.global_step] = digest(model, optimizer, lr_scheduler)
            self.val[state.global_step] = heldout_loss(model)
            self.skip += time.perf_counter() - t

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.clock.marks.append(time.perf_counter() - self.skip)


def make_trainer(alt: str, root: Path, size: dict[str, Any], callbacks: list[Any]) -> Trainer:
    every = size["every"]
    steps = every * CHECKPOINTS
    args = TrainingArguments(
        output_dir=str(root / "hf"), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=1e-3,
        weight_decay=0.01, warmup_steps=max(1, steps // 10), lr_scheduler_type="cosine",
        save_strategy="steps" if alt == "trainer" else "no", save_steps=every, logging_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
    )
    cbs = list(callbacks)
    if alt.startswith("coral"):
        from coral.integrations.hf_trainer import CoralTrainerCallback

        cbs.append(CoralTrainerCallback(repo_path=str(root / "coral"), init=True, save_every_n_steps=every,
                                        async_save=alt == "coral-async", save_on_preemption=False))
    return Trainer(model=model(size), args=args, train_dataset=Tokens(steps * BATCH), callbacks=cbs)


def coral_commit(root: Path, step: int) -> str:
    from coral import Repository

    repo = Repository(str(root / "coral"))
    for info in repo.log():
        md = info.metadata if hasattr(info, "metadata") else info["metadata"]
        if md.get("global_step") == step:
            return info.hash if hasattr(info, "hash") else info["hash"]
    raise KeyError(step)


def folder(alt: str, root: Path, step: int) -> str:
    if alt.startswith("coral"):
        from coral_hf import resume_from_coral

        return resume_from_coral(str(root / "coral"), coral_commit(root, step))
    return str(root / "hf" / f"checkpoint-{step}")


def run(spec: dict[str, Any]) -> None:
    size = SIZES[spec["size"]]
    every, alt, root = size["every"], spec["alt"], Path(spec["dir"])
    steps = [every * i for i in range(1, CHECKPOINTS + 1)]
    root.mkdir(parents=True, exist_ok=True)
    phase, out = spec["phase"], {}
    if alt.startswith("coral"):  # imported before any timing
        import coral.integrations.hf_trainer  # noqa: F401
        import coral_hf  # noqa: F401
    if phase == "train":
        clock = Clock()
        probe = Probe(every, clock)
        tr = make_trainer(alt, root, size, [probe])
        t0 = time.perf_counter()
        tr.train()
        wall = time.perf_counter() - t0
        for cb in tr.callback_handler.callbacks:  # background packing done (outside the wall time)
            if hasattr(cb, "repo") and hasattr(cb.repo, "wait"):
                cb.repo.wait()
        out = {"wall_s": wall, "blocked_s": clock.from_marks(every) if alt != "none" else [],
               "bytes_10": stored(root), "digests": {str(k): v for k, v in probe.digests.items()},
               "val": {str(k): v for k, v in probe.val.items()},
               "params": sum(p.numel() for p in tr.model.parameters()),
               "state_mib": sum(p.numel() * p.element_size() for p in tr.model.parameters()) / 2**20}
    elif phase == "restore":
        from safetensors.torch import load_file

        step = restore_step(spec, steps)
        tr = make_trainer("none", root, size, [])
        tr.create_optimizer_and_scheduler(num_training_steps=steps[-1])
        t = time.perf_counter()
        where = Path(folder(alt, root, step))  # Coral: writes the Trainer folder from the commit
        tr.model.load_state_dict(load_file(str(where / "model.safetensors")), strict=False)
        tr.model.tie_weights()
        tr.optimizer.load_state_dict(torch.load(where / "optimizer.pt", weights_only=True))
        tr.lr_scheduler.load_state_dict(torch.load(where / "scheduler.pt", weights_only=True))
        out = {"restore_s": time.perf_counter() - t, "digest": digest(tr.model, tr.optimizer, tr.lr_scheduler),
               "step": step}
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
                shutil.rmtree(root / "hf" / f"checkpoint-{s}")
        out = {"bytes_3": stored(root)}
    elif phase == "resume":
        tr = make_trainer("none", root, size, [])
        tr.train(resume_from_checkpoint=folder(alt, root, steps[RESUME_FROM - 1]))
        out = {"digest": digest(tr.model, tr.optimizer, tr.lr_scheduler), "step": steps[-1]}
    emit(out)
