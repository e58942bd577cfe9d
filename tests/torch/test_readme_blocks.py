"""The README's Python blocks, extracted from README.md and run in order, as a reader would paste them.

Blocks that stand alone run as written; blocks that use the reader's own objects (``model``, ``epoch``, ...)
get a small preamble defining only those names. The merge, Lightning, HF and JAX blocks are covered by their
packages' tests (they need the reader's fine-tunes and trainers).
"""
# ruff: noqa: S102  (exec runs the README's own code blocks, which is the point of this file)

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

TRAINING_PREAMBLE = """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
epoch, step, loss, val_loss = 0, 10, 0.5, 0.4
"""

CHECKPOINTER_PREAMBLE = """
import torch
from torch.utils.data import DataLoader, TensorDataset
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5)
loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
loss, val_loss = torch.tensor(0.5), 0.4
"""


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def block(starting: str, containing: str = "") -> str:
    (found,) = [b for b in python_blocks() if b.lstrip().startswith(starting) and containing in b]
    return found


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_first_blocks_run_in_sequence(in_tmp, capsys):
    ns: dict = {}
    exec(block("import numpy as np\nfrom coral import Repository\n\nrepo = Repository(\"./my_model\", init=True)"), ns)
    exec(block("import numpy as np\nfrom coral import Repository\n\nrepo = Repository(\"./my_model\")"), ns)
    repo = ns["repo"]
    assert repo.current_branch == "main" and len(repo.log()[0].parents) == 2  # the average merge
    assert any(c.message == "finetune step 0" and repo.is_pruned(c.hash) for c in repo.log(branch="finetune"))
    exec(block("repo.reset_branch("), ns)
    assert "exp" in repo.list_branches()
    assert "(256, 128)" in capsys.readouterr().out


def test_training_block(in_tmp):
    ns: dict = {}
    exec(TRAINING_PREAMBLE, ns)
    exec(block("from coral.version_control.repository import Repository"), ns)
    assert ns["commit_hash"] and ns["checkpoint"]["commit_hash"] == ns["commit_hash"]


def test_checkpointer_block_resumes_its_step(in_tmp):
    code = block("from coral.integrations.pytorch import Checkpointer\n", "step = ckpt.global_step")
    assert "step = ckpt.global_step" in code
    first: dict = {}
    exec(CHECKPOINTER_PREAMBLE, first)
    exec(code.replace("range(ckpt.epoch, 20)", "range(ckpt.epoch, 2)").replace("...", "step += 3"), first)
    resumed: dict = {}
    exec(CHECKPOINTER_PREAMBLE, resumed)
    exec(code.replace("...", "assert step >= 6; step += 3"), resumed)  # resumed at epoch 2, step 6
    assert resumed["ckpt"].epoch == 20 and resumed["step"] == 60
