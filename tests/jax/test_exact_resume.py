"""2N jitted Flax + Optax steps straight == N steps, a new process, restore, N steps: bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).with_name("resume_script.py")
N = 5


def _run(mode: str, repo: Path, out: Path) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu", CORAL_PLUGINS="jax")  # only this plugin: a faster start
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(repo), str(out), str(N)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _load(path: Path) -> dict[str, bytes]:
    with np.load(path) as f:
        return {k: f[k].tobytes() for k in f.files}


def test_resume_in_a_new_process_is_bit_identical_to_straight_training(tmp_path):
    repo = tmp_path / "repo"
    _run("straight", repo, tmp_path / "straight.npz")
    _run("resume", repo, tmp_path / "resumed.npz")
    straight, resumed, half = (
        _load(tmp_path / f) for f in ("straight.npz", "resumed.npz", "straight-half.npz")
    )
    assert set(straight) == set(resumed) and any(k.startswith("opt_state|0|mu|") for k in straight)
    assert straight == resumed  # params and optimizer state, every bit
    assert straight["params|Dense_0|kernel"] != half["params|Dense_0|kernel"]  # the N resumed steps did train
