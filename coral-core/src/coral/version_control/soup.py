"""Greedy model soups (Wortsman et al. 2022): average fine-tuned commits, keeping each one only if it helps.

Candidates are tried best first (by a metric their commits recorded); a candidate joins the soup only if the
evaluation of the uniform average does not get worse. The soup is committed with every ingredient as a parent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.dtypes import is_float
from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import CoralError, InvalidArgumentError, MergeConflictError

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

Evaluate = Callable[[dict[str, np.ndarray]], float]


@dataclass
class SoupResult:
    """What ``greedy_soup`` made: the commit (None with ``commit=False``), who got in, and every score."""

    commit: str | None
    ingredients: list[str]
    rejected: list[str]
    score: float
    scores: dict[str, float] = field(default_factory=dict)  # candidate -> score of the soup with it added
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def recorded_metric(metadata: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` as a commit recorded it: ``metadata["metrics"][metric]``, else ``metadata[metric]``."""
    metrics = metadata.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, Mapping) else None
    if value is None:
        value = metadata.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def greedy_soup(
    repo: Repository,
    candidates: Sequence[str],
    evaluate: Evaluate,
    *,
    metric: str | None = None,
    higher_is_better: bool = True,
    message: str | None = None,
    commit: bool = True,
) -> SoupResult:
    """Greedy soup of ``candidates`` (refs) on the current branch; ``evaluate(weights) -> score`` gets the
    soup as ``{name: ndarray}``. With ``metric`` the candidates are ordered by the value their commits
    recorded (best first), else taken in the given order. Returns a SoupResult; ``commit=False`` writes nothing.
    """
    if isinstance(candidates, str) or not candidates:
        raise InvalidArgumentError("candidates", candidates, "expected a non-empty list of commit refs")
    if not callable(evaluate):
        raise InvalidArgumentError("evaluate", evaluate, "expected a callable weights -> score")
    if commit and repo.staged:  # the soup commit would silently carry them
        raise CoralError(f"{len(repo.staged)} tensor(s) are staged: commit them before making a soup")
    ids = list(dict.fromkeys(repo.resolve(c) for c in candidates))
    if metric is not None:
        values = {}
        for cid in ids:
            value = recorded_metric(repo.get_commit(cid).metadata, metric)
            if value is None:
                raise InvalidArgumentError("metric", metric, f"commit {cid[:8]} recorded no numeric value for it")
            values[cid] = value
        ids.sort(key=lambda c: -values[c] if higher_is_better else values[c])
    trees = {cid: repo.get_commit(cid).tree for cid in ids}
    first = trees[ids[0]]
    conflicts = {}
    for cid in ids[1:]:
        for name in first.keys() | trees[cid].keys():
            a, b = first.get(name), trees[cid].get(name)
            if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
                conflicts[name] = f"differs between {ids[0][:8]} and {cid[:8]}"
    if conflicts:
        raise MergeConflictError(conflicts)

    lead = repo.load_arrays(ids[0])
    floats = [n for n in sorted(lead) if is_float(first[n].dtype)]
    wide = {n: lead[n].astype(np.complex128 if lead[n].dtype.kind == "c" else np.float64) for n in floats}
    soup = dict(lead)
    best = _score(evaluate, soup)
    scores, ingredients, rejected = {ids[0]: best}, [ids[0]], []
    for cid in ids[1:]:
        arrays = repo.load_arrays(cid, floats)
        trial_sum = {n: wide[n] + arrays[n] for n in floats}
        trial = dict(soup)
        for n in floats:
            trial[n] = (trial_sum[n] / (len(ingredients) + 1)).astype(lead[n].dtype)
        score = _score(evaluate, trial)
        scores[cid] = score
        if score >= best if higher_is_better else score <= best:
            wide, soup, best = trial_sum, trial, score
            ingredients.append(cid)
        else:
            rejected.append(cid)
        log.info("greedy_soup: %s %s (score %s)", cid[:8], "kept" if cid in ingredients else "rejected", score)
    commit_id = None
    if commit:
        repo.stage_weights(
            {
                n: WeightTensor(a, WeightMetadata(n, a.shape, first[n].dtype, first[n].layer_type))
                for n, a in soup.items()
            }
        )
        record = {
            "strategy": "greedy_soup",
            "ingredients": ingredients,
            "rejected": rejected,
            "scores": {c[:12]: s for c, s in scores.items()},
            "score": best,
            "metric": metric,
        }
        non_float = sorted(set(soup) - set(floats))
        if non_float:
            record["non_float_from"] = {n: ids[0] for n in non_float}
        commit_id = repo.commit(
            message or f"Greedy soup of {len(ingredients)} of {len(ids)} candidates (score {best:.6g})",
            {"merge": record},
            parents=ingredients,
        )
        if repo.current_branch is None:
            log.warning("HEAD is detached: soup commit %s is on no branch and will be lost on the next checkout; "
                        "keep it with `coral branch NAME %s`", commit_id[:8], commit_id[:8])
    return SoupResult(commit_id, ingredients, rejected, best, scores, soup)


def _score(evaluate: Evaluate, weights: dict[str, np.ndarray]) -> float:
    value = evaluate(weights)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError("evaluate", value, "must return a number (the score)") from None
    if not math.isfinite(score):
        raise InvalidArgumentError("evaluate", value, "returned a non-finite score")
    return score
