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


_SCRATCH_BLOCK = 8 * 1024 * 1024


def settle(folder: Path, nbytes: int) -> None:
    """Give the next timed run warm memory: write and delete a scratch file of twice ``nbytes``.

    This VM hands freed guest memory back to its host (virtio-balloon free page reporting); the first touch
    of such a page costs a host fault, so writing 240 MB into new files takes ~0.5 s on "cold" pages and
    ~0.06 s on pages freed a moment ago. Without this, whichever side of a pair runs right after the other
    side deleted its file gets warm pages and the ratio measures the order, not the code. It ends with
    ``os.sync()``, so neither side's fsync pays for earlier work (a repack's replaced files, deleted
    baselines: the disk is mounted with ``discard``). Called before every timed run of both sides,
    outside the timing.
    """
    path = folder / ".settle-scratch"
    block = b"\x5a" * _SCRATCH_BLOCK
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(max(1, 2 * nbytes // _SCRATCH_BLOCK + 8)):
            os.write(fd, block)
    finally:
        os.close(fd)
        path.unlink()
    os.sync()


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
    baseline: Callable[[], float],
    candidate: Callable[[], float],
    trials: int,
    before: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run baseline and candidate back to back ``trials`` times (order alternating); ratio = baseline/candidate.

    On a shared two-core machine single timings wander; adjacent pairs see the same load, so the median of
    per-pair ratios is the fair figure. ``before`` runs ahead of every timed run (untimed), e.g. ``settle``.
    """
    ratios, bs, cs = [], [], []
    for i in range(trials):
        first, second = (baseline, candidate) if i % 2 == 0 else (candidate, baseline)
        before()
        t1 = first()
        before()
        t2 = second()
        b, c = (t1, t2) if i % 2 == 0 else (t2, t1)
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
