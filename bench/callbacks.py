"""Framework callbacks (issue 25): blocked time per save, Coral's callback against the framework's own save.

Run ``python bench/callbacks.py`` (about 3-4 minutes on two quiet cores, bounded well under 6; ``--quick`` for a
smoke run; ``--only lightning`` or ``--only hf``). Prints a Markdown table.

- Lightning: one real ``pl.Trainer`` run of issue 25's 15.0M-parameter MLP with AdamW (172 MiB of weights +
  moments) carrying both ``ModelCheckpoint(every_n_train_steps=N, save_top_k=-1)`` and
  ``CoralCallback(save_every_n_steps=N)``. Both save at the same steps from ``on_train_batch_end``; the bench
  times each one's ``on_train_batch_end`` (Coral's runs in its ``_CoralSaver``) at the steps where it saves.
- HF: one real ``transformers.Trainer`` run of a GPT-2 built from a config (about 13M parameters, ~150 MiB
  of weights + AdamW moments) with ``save_strategy="steps"`` and ``CoralTrainerCallback()`` (its default,
  ``save_on_trainer_save=True``, commits whenever the Trainer saves). The bench times the Trainer's own
  ``_save_checkpoint`` (model safetensors, optimizer, scheduler, RNG, trainer state) and the callback's
  ``on_save``, which the Trainer calls right after it.

Each timed save is preceded, untimed, by ``settle`` (write and delete a scratch file, then ``os.sync()``): no
side pays for the other's dirty pages, and both get equally warm memory. The framework saves do not fsync;
Coral's commit does (its checkpoint is durable when the hook returns). Ratio = Coral / framework per save
pair (same step), median with min-max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
MB = 1024 * 1024


def timing(record: list[float], fn: Callable[..., Any], before: Callable[[], None], when: Callable[[], bool]) -> Any:
    """``fn`` wrapped: when ``when()`` holds, run ``before`` (untimed) then time the call into ``record``."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not when():
            return fn(*args, **kwargs)
        before()
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - t)

    return wrapped


def row(what: str, coral: list[float], peer: list[float], peer_name: str, nbytes: int) -> str:
    pairs = list(zip(coral, peer, strict=False))
    ratios = [c / p for c, p in pairs]
    r = statistics.median(ratios)
    return (
        f"| {what} | <= 1.0x | {r:.2f}x | {'pass' if r <= 1.0 else '**miss**'} | median of {len(ratios)} saves "
        f"({nbytes / MB:.0f} MiB of state), min {min(ratios):.2f}x max {max(ratios):.2f}x; Coral "
        f"{statistics.median(coral):.2f} s, {peer_name} {statistics.median(peer):.2f} s (medians) |"
    )


def bench_lightning(work: Path, saves: int, every: int) -> str:
    import pytorch_lightning as pl
    import torch
    from _measure import settle
    from _workload import Teacher
    from coral_lightning import CoralCallback
    from pytorch_lightning.callbacks import ModelCheckpoint
    from storage import user_mlp

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = user_mlp()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.01)

    teacher = Teacher()
    batches = [teacher.batch() for _ in range(every * saves)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    module = Module()
    nbytes = 3 * sum(p.numel() * 4 for p in module.parameters())
    mc = ModelCheckpoint(dirpath=work / "pl-ckpts", every_n_train_steps=every, save_top_k=-1)
    coral = CoralCallback(repo_path=work / "pl-coral", init=True, save_every_n_steps=every, branch="main")
    trainer = pl.Trainer(
        max_steps=every * saves, callbacks=[mc, coral], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, num_sanity_val_steps=0,
    )
    times: dict[str, list[float]] = {"coral": [], "lightning": []}
    due = lambda: trainer.global_step > 0 and trainer.global_step % every == 0  # noqa: E731
    mc.on_train_batch_end = timing(times["lightning"], mc.on_train_batch_end, lambda: settle(work, nbytes), due)

    class Timer(pl.Callback):  # CoralCallback attaches its saver in setup: wrap it once it is there
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            saver = next(cb for cb in trainer.callbacks if type(cb).__name__ == "_CoralSaver")
            saver.on_train_batch_end = timing(times["coral"], saver.on_train_batch_end,
                                              lambda: settle(work, nbytes), due)

    trainer.callbacks.insert(0, Timer())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    coral.manager.wait()
    print(f"  lightning: Coral {[f'{t:.2f}' for t in times['coral']]}, "
          f"ModelCheckpoint {[f'{t:.2f}' for t in times['lightning']]}", flush=True)
    assert len(times["coral"]) == saves == len(times["lightning"]), times
    return row(
        f"blocked time per save, `CoralCallback` vs Lightning's `ModelCheckpoint` (real `pl.Trainer`, "
        f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M-param MLP + AdamW)",
        times["coral"], times["lightning"], "ModelCheckpoint", nbytes,
    )


def bench_hf(work: Path, saves: int, every: int) -> str:
    import torch
    from _measure import settle
    from coral_hf import CoralTrainerCallback
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=8000, n_positions=128, n_embd=384, n_layer=6, n_head=6, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    nbytes = 3 * 4 * n_params
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (4 * every * saves, 32), generator=g)
    data = [{"input_ids": x, "labels": x} for x in ids]
    args = TrainingArguments(
        output_dir=str(work / "hf-out"), max_steps=every * saves, per_device_train_batch_size=4,
        save_strategy="steps", save_steps=every, logging_steps=every, report_to=[], use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    coral = CoralTrainerCallback(work / "hf-coral", init=True, save_on_train_end=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[coral])
    times: dict[str, list[float]] = {"coral": [], "hf": []}
    always = lambda: True  # noqa: E731
    trainer._save_checkpoint = timing(times["hf"], trainer._save_checkpoint, lambda: settle(work, nbytes), always)
    coral.on_save = timing(times["coral"], coral.on_save, lambda: settle(work, nbytes), always)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    coral.manager.wait()
    print(f"  hf: Coral {[f'{t:.2f}' for t in times['coral']]}, Trainer {[f'{t:.2f}' for t in times['hf']]}",
          flush=True)
    assert len(times["coral"]) == saves == len(times["hf"]), times
    return row(
        f"blocked time per save, `CoralTrainerCallback` (in `on_save`) vs `Trainer`'s own save "
        f"(`save_strategy=\"steps\"`, real `transformers.Trainer`, GPT-2 from a config, {n_params / 1e6:.1f}M params "
        "+ AdamW)",
        times["coral"], times["hf"], "Trainer._save_checkpoint", nbytes,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["lightning", "hf"], default=None)
    ap.add_argument("--saves", type=int, default=7, help="saves per framework (default 7, at least 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 saves each")
    ap.add_argument("--work", type=Path, default=None, help="parent of the temporary work folder")
    args = ap.parse_args(argv)
    saves = 2 if args.quick else max(5, args.saves)
    every = 2
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="coral-callbacks-", dir=args.work) as tmp:
        work = Path(tmp)
        if args.only in (None, "lightning"):
            rows.append(bench_lightning(work, saves, every))
        if args.only in (None, "hf"):
            rows.append(bench_hf(work, saves, every))
    load1 = os.getloadavg()[0]
    print(f"\nRun {started}, load average {load0:.1f} at start, {load1:.1f} at end\n")
    print("| Requirement | Target | Measured | Result | Notes |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0 if all("| pass |" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
