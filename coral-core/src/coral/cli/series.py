"""Metric series out of commit metadata: one point per checkpoint along a branch, pruned checkpoints included.

Pruning drops a checkpoint's tensors but keeps its commit (and so its metrics), so curves stay complete.
Commits written without metrics (or before provenance existed) simply add no point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RefNotFoundError
from ..version_control.repository import Repository

LOWER_IS_BETTER = ("loss", "err", "perplexity", "ppl", "wer", "cer", "mse", "mae")
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Point:
    """One checkpoint's value of a metric."""

    step: int
    value: float
    commit: str
    pruned: bool
    is_best: bool


def numeric(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and missing values are not plotted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def metric_value(metadata: Mapping[str, Any], name: str) -> float | None:
    """``metrics[name]`` of checkpoint metadata; ``loss`` and ``global_step``/``epoch`` also at the top level."""
    metrics = metadata.get("metrics")
    if isinstance(metrics, Mapping) and name in metrics:
        return numeric(metrics[name])
    if name in ("loss", "global_step", "epoch"):
        return numeric(metadata.get(name))
    return None


def metric_names(metadatas: list[Mapping[str, Any]]) -> list[str]:
    """Every numeric metric found, in first-seen order, ``loss`` first."""
    names: dict[str, None] = {}
    for meta in metadatas:
        if numeric(meta.get("loss")) is not None:
            names.setdefault("loss", None)
        metrics = meta.get("metrics")
        if isinstance(metrics, Mapping):
            for k, v in metrics.items():
                if numeric(v) is not None:
                    names.setdefault(str(k), None)
    return list(names)


def branch_commits(repo: Repository, ref: str) -> list[str]:
    """The first-parent chain of ``ref``, oldest first (the checkpoints of one run)."""
    chain: list[str] = []
    cid: str | None = repo.resolve(ref)
    seen: set[str] = set()
    while cid and cid not in seen:
        seen.add(cid)
        chain.append(cid)
        try:
            parents = repo.get_commit(cid).parents
        except RefNotFoundError:
            break
        cid = parents[0] if parents else None
    return chain[::-1]


def series(repo: Repository, ref: str, metric: str) -> list[Point]:
    """The points of ``metric`` along ``ref`` (oldest first); the step is ``global_step`` or the position."""
    points = []
    for i, cid in enumerate(branch_commits(repo, ref)):
        try:
            meta = repo.get_commit(cid).metadata
        except RefNotFoundError:
            continue
        value = metric_value(meta, metric)
        if value is None:
            continue
        step = meta.get("global_step")
        ckpt = meta.get("coral_checkpoint")
        points.append(
            Point(
                step=int(step) if numeric(step) is not None else i,
                value=value,
                commit=cid,
                pruned=repo.is_pruned(cid),
                is_best=bool(isinstance(ckpt, Mapping) and ckpt.get("is_best")),
            )
        )
    return points


def best_point(points: list[Point], metric: str) -> Point | None:
    """The best checkpoint: the last one the manager flagged best, else the min (losses) or max of the metric."""
    if not points:
        return None
    flagged = [p for p in points if p.is_best]
    if flagged:
        return flagged[-1]
    lower = any(word in metric.lower() for word in LOWER_IS_BETTER)
    return (min if lower else max)(points, key=lambda p: p.value)


def sparkline(values: list[float]) -> str:
    """``▁▃▅█``: one block per value, scaled between the smallest and the largest."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[0 if span == 0 else round((v - lo) / span * top)] for v in values)


def format_value(value: float) -> str:
    """A compact number: integers as they are, floats with four significant digits."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else format(value, ".4g")
