"""Shared pieces of bench/compare.py's cells: sizes, digests, peak RSS, on-disk bytes, the result line."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The workload per size: (checkpoint every K steps, hidden width, blocks). 10 checkpoints per job.
SIZES = {
    "full": {"every": 10, "torch_d": 512, "torch_h": 2048, "torch_blocks": 10,
             "small_d": 384, "small_h": 1536, "small_blocks": 5, "hf_layers": 4},
    "quick": {"every": 2, "torch_d": 64, "torch_h": 128, "torch_blocks": 1,
              "small_d": 64, "small_h": 128, "small_blocks": 1, "hf_layers": 1},
}
CHECKPOINTS = 10
OLDER = 5  # the older checkpoint restored besides the latest and the best (what a restore reads when it is not newest)
RESUME_FROM = 9  # the resumed run starts from checkpoint 9 and must end on checkpoint 10's bytes


def restore_step(spec: dict[str, Any], steps: list[int]) -> int:
    """The checkpoint a restore cell loads: the step the parent named (the best by held-out loss), else the
    latest or checkpoint ``OLDER``."""
    if spec.get("step") is not None:
        return int(spec["step"])
    return steps[-1] if spec["which"] == "latest" else steps[OLDER - 1]


def digest_arrays(items: list[tuple[str, np.ndarray]]) -> str:
    """One SHA-256 over every (name, dtype, shape, bytes), in name order: equal digests = bit-exact states."""
    h = hashlib.sha256()
    for name, arr in sorted(items, key=lambda kv: kv[0]):
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return h.hexdigest()


def torch_items(prefix: str, obj: Any) -> list[tuple[str, np.ndarray]]:
    """Every tensor (and number) of a nested state dict, named by its path; bf16 viewed as int16, bit for bit."""
    import torch

    out: list[tuple[str, np.ndarray]] = []
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        out.append((prefix, t.numpy()))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(torch_items(f"{prefix}/{k}", v))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.extend(torch_items(f"{prefix}/{i}", v))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out.append((prefix, np.asarray(float(obj))))
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_bytes(root: Path) -> int:
    """Apparent size of every file under ``root``."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Clock:
    """Blocked time per checkpoint: the save call itself, or, inside a framework's loop, the step interval
    that holds the save minus the median interval of the steps without one."""

    def __init__(self) -> None:
        self.saves: list[float] = []
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def from_marks(self, every: int) -> list[float]:
        gaps = np.diff(np.asarray(self.marks))
        # marks[i] is taken when step i+1 starts, so gaps[i] runs over step i+1 and the save after it
        save_idx = [i for i in range(len(gaps)) if (i + 1) % every == 0]
        plain = [gaps[i] for i in range(1, len(gaps)) if (i + 1) % every != 0]
        base = float(np.median(plain)) if plain else 0.0
        return [max(0.0, float(gaps[i]) - base) for i in save_idx]


def emit(result: dict[str, Any]) -> None:
    """The cell's one result line on stdout (the parent reads the last line starting with RESULT)."""
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
