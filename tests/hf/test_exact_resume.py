"""Exact resume: N steps straight == N/2 steps, then a NEW process resuming from the Coral commit, bit for bit.

The resumed process gets everything from the Coral commit (through ``resume_from_coral``): weights,
optimizer, scheduler, RNG, and the data position (the TrainerState's global_step). Dropout is on, so a
wrong RNG state would change the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from coral import Repository
from coral_hf import resume_from_coral
from safetensors.torch import load_file

TINY_RUN = Path(__file__).with_name("tiny_run.py")


def _subprocess_run(spec: dict) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # same intra-op thread count as this process: float sums are ordered by thread, and bits are compared
    spec = {**spec, "threads": torch.get_num_threads()}
    done = subprocess.run(
        [sys.executable, str(TINY_RUN), json.dumps(spec)],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]


CASES = {
    # 8 steps in one epoch, checkpoint mid-epoch at step 4, evaluation every 2 steps (it draws from the RNG too)
    "mid_epoch_with_eval": {"max_steps": 8, "n": 32, "eval_steps": 2, "callback": {"save_every_n_steps": 4}},
    # 2 epochs of 4 steps, checkpoint at the epoch boundary (the Trainer reshuffles after it)
    "epoch_boundary": {"epochs": 2, "n": 16, "callback": {"save_every_n_epochs": 1}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_in_a_new_process_is_bit_identical(tmp_path, tiny, case):
    base = CASES[case]
    _, _, straight = tiny.run(
        {**base, "repo": str(tmp_path / "straight"), "output_dir": str(tmp_path / "o1")}
    )

    half = {**base, "repo": str(tmp_path / "resumed"), "output_dir": str(tmp_path / "o2")}
    _, _, halfway = tiny.run({**half, "stop_at": 4})
    repo = Repository(tmp_path / "resumed")
    assert [c.metadata["global_step"] for c in repo.log()] == [4]

    _subprocess_run({**half, "resume": "HEAD", "dump": str(tmp_path / "resumed.safetensors")})
    resumed = load_file(tmp_path / "resumed.safetensors")
    expected = straight.state_dict()
    assert sorted(resumed) == sorted(expected)
    mismatched = [k for k in expected if not torch.equal(resumed[k], expected[k])]
    assert not mismatched, f"{len(mismatched)} tensors differ after resume, e.g. {mismatched[:3]}"
    # and the run really trained past the checkpoint: the half-way weights are different
    assert any(not torch.equal(halfway.state_dict()[k], expected[k]) for k in expected)
    # the resumed process went on committing on the same branch, from step 4
    assert [c.metadata["global_step"] for c in Repository(tmp_path / "resumed").log()] == [8, 4]


def test_resume_folder_holds_what_the_trainer_reads(tmp_path, tiny):
    tiny.run(
        {
            "max_steps": 2,
            "repo": str(tmp_path / "r"),
            "output_dir": str(tmp_path / "o"),
            "callback": {"save_every_n_steps": 2},
        }
    )
    folder = resume_from_coral(str(tmp_path / "r"), output_dir=tmp_path / "ckpt")
    names = set(os.listdir(folder))
    assert {
        "model.safetensors",
        "config.json",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
    } <= names
    assert json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())["global_step"] == 2
    # plain tensors and containers only: loadable with weights_only=True
    # (numpy allowed for the RNG, as the Trainer does)
    torch.load(tmp_path / "ckpt" / "optimizer.pt", weights_only=True)
    torch.load(tmp_path / "ckpt" / "scheduler.pt", weights_only=True)
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        rng = torch.load(tmp_path / "ckpt" / "rng_state.pth", weights_only=True)
    assert set(rng) >= {"python", "numpy", "cpu"}
    with pytest.raises(Exception, match="must be empty"):
        resume_from_coral(str(tmp_path / "r"), output_dir=tmp_path / "ckpt")
