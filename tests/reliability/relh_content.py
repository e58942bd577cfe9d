"""Deterministic checkpoint content for the reliability harness: any process regenerates step N bit for bit.

Every step changes about a tenth of the float32 weights (so repack finds deltas), keeps a frozen bf16 table
(dedup), and carries NaN payloads, -0.0 and infinities so "bit-exact" means bit patterns, not values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blake3
import ml_dtypes
import numpy as np
from coral.training import TrainingState

# "small" keeps each save to a few kilobytes (the suite); "large" adds a multi-chunk tensor (the bench)
SIZES = {"small": 2048, "medium": 65536, "large": 1_300_000}


def model_weights(step: int, seed: int, size: str = "small") -> dict[str, np.ndarray]:
    """The model tensors of checkpoint ``step``."""
    n = SIZES[size]
    base = np.random.default_rng([seed, 0]).standard_normal(n).astype(np.float32)
    rng = np.random.default_rng([seed, step])
    w = base.copy()
    idx = rng.choice(n, size=max(1, n // 10), replace=False)
    w[idx] += np.float32(1e-3) * np.float32(step % 97 + 1)
    bias = rng.standard_normal(64).astype(np.float32)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 0.0], dtype=np.float32).view(np.uint32).copy()
    special[0] = 0x7FC00000 | (step & 0x3FFFFF)  # a NaN whose payload carries the step
    bias[:5] = special.view(np.float32)
    out = {
        "layer0.weight": w,
        "layer0.bias": bias,
        "frozen.embed": np.random.default_rng([seed, 1]).standard_normal(n // 4).astype(ml_dtypes.bfloat16),
        "counter": np.array([step, -step], dtype=np.int64),
    }
    if size == "large":
        # two 4 MiB chunks: the second changes, the first does not
        big = np.random.default_rng([seed, 2]).integers(0, 2**31, 2 * 1024 * 1024 + 5, dtype=np.int32)
        big[-7:] = step
        out["big.table"] = big
    return out


def optimizer_arrays(step: int, seed: int, size: str = "small") -> dict[str, np.ndarray]:
    """Adam-like moments for checkpoint ``step`` (stored as tensors under ``optim/``)."""
    n = SIZES[size]
    rng = np.random.default_rng([seed, step, 7])
    return {
        "exp_avg": rng.standard_normal(n // 8).astype(np.float32),
        "exp_avg_sq": np.abs(rng.standard_normal(n // 8)).astype(np.float32),
    }


def training_state(step: int, seed: int, size: str = "small") -> TrainingState:
    opt = optimizer_arrays(step, seed, size)
    return TrainingState(
        epoch=step // 10,
        global_step=step,
        learning_rate=1e-3,
        loss=1.0 / (step + 1),
        metrics={"acc": step / (step + 1.0), "odd": float("nan") if step % 3 == 0 else step},
        optimizer_state={
            "state": {0: {"exp_avg": opt["exp_avg"], "exp_avg_sq": opt["exp_avg_sq"], "step": step}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        },
    )


def flat_content(step: int, seed: int, size: str = "small") -> dict[str, np.ndarray]:
    """Everything checkpoint ``step`` holds, under one naming: model tensors plus ``optim/...`` moments."""
    out = dict(model_weights(step, seed, size))
    for k, v in optimizer_arrays(step, seed, size).items():
        out[f"optim/{k}"] = v
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    """BLAKE3 over names, dtypes, shapes and raw bytes, in name order."""
    h = blake3.blake3()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.name}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def loaded_flat(repo: Any, commit: str, kind: str) -> dict[str, np.ndarray]:
    """Read a commit back in the ``flat_content`` naming (through the manager's loader for checkpoints)."""
    if kind == "repo":
        return repo.load_arrays(commit)
    from coral.training.manager import load_checkpoint_commit

    ck = load_checkpoint_commit(repo, commit)
    out = {n: w.data for n, w in ck["weights"].items()}
    st = ck["state"].optimizer_state["state"][0]
    out["optim/exp_avg"] = st["exp_avg"]
    out["optim/exp_avg_sq"] = st["exp_avg_sq"]
    return out


def check_commit(
    repo: Any, commit: str, step: int, seed: int, size: str, kind: str, want_digest: str | None
) -> list[str]:
    """Compare a stored commit with the regenerated content of ``step``; problems (empty: bit-exact)."""
    problems: list[str] = []
    try:
        got = loaded_flat(repo, commit, kind)
    except Exception as exc:  # reported, not raised: the caller collects every failure
        return [f"commit {commit[:12]} (step {step}) does not load: {type(exc).__name__}: {exc}"]
    want = flat_content(step, seed, size)
    if sorted(got) != sorted(want):
        problems.append(f"commit {commit[:12]}: tensors {sorted(got)} != {sorted(want)}")
    for name in want:
        if name in got:
            a, b = np.ascontiguousarray(got[name]), want[name]
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                problems.append(f"commit {commit[:12]} tensor {name!r} is not bit-exact")
    if want_digest is not None and digest(got) != want_digest:
        problems.append(f"commit {commit[:12]}: digest differs from the one the saver reported")
    return problems


def append_line(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line with a single write() on an O_APPEND fd: a kill leaves whole lines only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
