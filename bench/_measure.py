"""Measuring helpers for the storage benchmark: durable torch.save, on-disk sizes, paired timings."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_torch_save(obj: Any, path: Path) -> float:
    """Seconds for ``torch.save`` to a new file plus ``fsync`` of the file and its folder (a durable save)."""
    t = time.perf_counter()
    torch.save(obj, path)
    fsync_path(path)
    fsync_path(path.parent)
    return time.perf_counter() - t


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def tree_bytes(root: Path) -> int:
    """Apparent size of every file under ``root`` (what the repository occupies, all overheads included)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def object_file_bytes(repo: Any, key: str) -> int:
    """On-disk size of one object file (payload plus the store's own framing)."""
    return os.lstat(repo.store.root.joinpath("objects", *key.split("/"))).st_size


def paired_ratio(
    baseline: Callable[[], float], candidate: Callable[[], float], trials: int
) -> dict[str, Any]:
    """Run baseline and candidate back to back ``trials`` times (order alternating); ratio = baseline/candidate.

    On a shared two-core machine single timings wander; adjacent pairs see the same load, so the median of
    per-pair ratios is the fair figure.
    """
    ratios, bs, cs = [], [], []
    for i in range(trials):
        if i % 2 == 0:
            b = baseline()
            c = candidate()
        else:
            c = candidate()
            b = baseline()
        bs.append(b)
        cs.append(c)
        ratios.append(b / c)
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "baseline_s": statistics.median(bs),
        "candidate_s": statistics.median(cs),
    }


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
