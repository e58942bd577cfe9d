"""A real transformers.Trainer (tiny BERT from a config, tests/hf/tiny_run.py) with CoralTrainerCallback, for the
preemption tests: ``python hf_run.py REPO OUT [--resume] [--sleep S]`` prints ``step N`` after each step."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hf"))

import torch  # noqa: E402
from coral_hf import CoralTrainerCallback, resume_from_coral  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_run import TinyDataset, make_model  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402


class Steps(TrainerCallback):
    """Prints ``step N`` at each step end; sleeps at each step start so the signal lands mid-step."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(self.pause)

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        print(f"step {state.global_step}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    args = TrainingArguments(
        output_dir=a.out + ".hf", num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-3,
        eval_strategy="no", save_strategy="no", logging_steps=1, report_to=[], use_cpu=True, seed=42,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    coral = CoralTrainerCallback(repo_path=a.repo, init=True, save_on_train_end=False)
    trainer = Trainer(model=make_model(), args=args, train_dataset=TinyDataset(32), callbacks=[Steps(a.sleep), coral])
    trainer.train(resume_from_checkpoint=resume_from_coral(a.repo) if a.resume else None)
    save_file({k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}, a.out)


if __name__ == "__main__":
    main()
