"""Retention: which checkpoints a set of keep rules preserves, and pruning the rest (history keeps them, marked).

Shared by CheckpointManager (keep_* options) and coral-jax's CoralCheckpointManager (Orbax's max_to_keep,
keep_period and best_fn), so both prune and reclaim space the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..version_control.repository import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionRules:
    """Keep rules; a checkpoint any rule keeps survives, the newest always does (it is the resume point).

    ``last_n``: the newest N; ``best_n``: the N best by ``rank`` (entries it ranks None are kept only with
    ``keep_unranked``); ``every_n``: entries whose ``period_of(entry)`` divides by N; ``keep``: these ids.
    With no count rule (``last_n``, ``best_n``, ``every_n`` all None) everything is kept.
    """

    last_n: int | None = None
    best_n: int | None = None
    rank: Callable[[dict[str, Any]], float | None] | None = None
    minimize: bool = True
    keep_unranked: bool = False
    every_n: int | None = None
    period_of: Callable[[dict[str, Any]], int] | None = None

    @property
    def limits_anything(self) -> bool:
        return self.last_n is not None or self.best_n is not None or self.every_n is not None


def select_kept(entries: Sequence[dict[str, Any]], rules: RetentionRules, keep: Iterable[int] = ()) -> list[bool]:
    """One flag per entry (oldest first): True for what ``rules`` keep; ``keep`` names indexes kept regardless."""
    n = len(entries)
    if not rules.limits_anything:
        return [True] * n
    kept = [False] * n
    if rules.last_n:
        for i in range(max(0, n - rules.last_n), n):
            kept[i] = True
    if rules.best_n:
        rank = rules.rank
        if rank is None:
            raise ValueError("RetentionRules.best_n needs rank")
        values = [rank(e) for e in entries]
        ranked = sorted(
            (i for i in range(n) if values[i] is not None), key=lambda i: values[i], reverse=not rules.minimize  # type: ignore[arg-type,return-value]
        )
        for i in ranked[: rules.best_n]:
            kept[i] = True
        if rules.keep_unranked:
            for i in range(n):
                kept[i] = kept[i] or values[i] is None
    if rules.every_n:
        period_of = rules.period_of
        if period_of is None:
            raise ValueError("RetentionRules.every_n needs period_of")
        for i, e in enumerate(entries):
            kept[i] = kept[i] or period_of(e) % rules.every_n == 0
    for i in keep:
        kept[i] = True
    if n:
        kept[-1] = True  # the newest is the resume point
    return kept


def prune_commits(repository: Repository, commit_hashes: Iterable[str]) -> list[str]:
    """Prune each commit (its tensors become collectable, the commit stays in history) and reclaim the space."""
    done = []
    for commit_hash in commit_hashes:
        repository.prune(commit_hash)
        done.append(commit_hash)
    if done:
        repository.gc()
        log.info("retention pruned %d checkpoint(s)", len(done))
    return done
