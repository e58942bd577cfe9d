"""A real, tiny ``transformers.Trainer`` run (2-layer BERT, hidden 32, vocab 100, dropout on) for the coral-hf tests.

Imported by the tests, and run as a script (``python tiny_run.py '<json spec>'``) when a test needs a new process.
Nothing is downloaded: the model is built from a config and the data is synthetic.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

VOCAB, SEQ = 100, 12


def make_model(seed: int = 1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


class TinyDataset(torch.utils.data.Dataset):
    """Random token ids and labels, fixed by ``seed``."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, VOCAB, (n, SEQ), generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.y[i]}


class StopAt(TrainerCallback):
    """Ends training after ``step`` optimizer steps, as a crash or preemption would (the schedule stays that of
    max_steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step >= self.step:
            control.should_training_stop = True


def run(spec: dict[str, Any]) -> tuple[Trainer, Any, BertForSequenceClassification]:
    """Train per ``spec``: repo, output_dir, max_steps, n (examples), batch, eval_steps, stop_at, resume, callback."""
    from coral_hf import CoralTrainerCallback, resume_from_coral

    model = make_model()
    eval_steps = spec.get("eval_steps")
    args = TrainingArguments(
        output_dir=spec["output_dir"],
        max_steps=spec.get("max_steps", -1),
        num_train_epochs=spec.get("epochs", 1),
        per_device_train_batch_size=spec.get("batch", 4),
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy=spec.get("save_strategy", "no"),
        save_steps=spec.get("save_steps", 500),
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=42,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    callbacks: list[Any] = []
    coral_cb = None
    if spec.get("repo") is not None:
        coral_cb = CoralTrainerCallback(repo_path=spec["repo"], init=True, **spec.get("callback", {}))
        callbacks.append(coral_cb)
    if spec.get("stop_at"):
        callbacks.append(StopAt(spec["stop_at"]))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=TinyDataset(spec.get("n", 32)),
        eval_dataset=TinyDataset(8, seed=7) if eval_steps else None,
        callbacks=callbacks,
    )
    resume = spec.get("resume")
    # the one line a user writes to resume exactly from a Coral checkpoint:
    trainer.train(resume_from_checkpoint=resume_from_coral(spec["repo"], resume) if resume else None)
    return trainer, coral_cb, model


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    _, _, model = run(spec)
    from safetensors.torch import save_file

    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 writes the dump
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, spec["dump"])


if __name__ == "__main__":
    main()
