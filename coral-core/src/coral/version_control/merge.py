"""Weight-space merges of two commits: which strategy each tensor gets, every check made before anything is
written, and the merge commit with its record (strategy, parameters, merge base, seed, side choices).

The per-tensor arithmetic lives in ``merge_strategies``; this module decides what to apply where.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.dtypes import is_float
from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import CoralError, InvalidArgumentError, MergeConflictError, RefNotFoundError
from . import merge_strategies as ms

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

SIDES = ("ours", "theirs")
STRATEGIES = ("average", "weighted", "task_arithmetic", "ties", "dare", "dare_ties", "slerp", *SIDES)
#: strategies that work on task vectors (side - merge base)
NEEDS_BASE = frozenset({"task_arithmetic", "ties", "dare", "dare_ties"})
#: strategies that draw random numbers (reproducible with ``seed``)
RANDOM = frozenset({"dare", "dare_ties"})
_REAL_ONLY = frozenset({"ties", "dare_ties", "slerp"})  # sign elections and angles need real numbers
_USES = {
    "weights": frozenset({"weighted", "task_arithmetic", "ties", "dare", "dare_ties"}),
    "density": frozenset({"ties", "dare", "dare_ties"}),
    "t": frozenset({"slerp"}),
    "seed": RANDOM,
}
_REQUIRED = {"weighted": "weights", "ties": "density", "dare": "density", "dare_ties": "density", "slerp": "t"}


@dataclass(frozen=True)
class MergeOptions:
    """A checked merge request: the default strategy, its parameters and the per-tensor choices."""

    strategy: str = "average"
    weights: tuple[float, float] | None = None
    density: float | None = None
    seed: int | None = None
    t: float | None = None
    per_tensor: tuple[tuple[str, str], ...] = ()
    on_conflict: str | None = None

    @classmethod
    def check(
        cls,
        strategy: str = "average",
        weights: Sequence[float] | None = None,
        *,
        density: float | None = None,
        seed: int | None = None,
        t: float | None = None,
        per_tensor: Mapping[str, str] | None = None,
        on_conflict: str | None = None,
    ) -> MergeOptions:
        """Validate every parameter (one clear error naming it); a random strategy without ``seed`` gets a
        fresh one, so that the recorded seed always reproduces the merge."""
        if strategy not in STRATEGIES:
            raise InvalidArgumentError("strategy", strategy, f"choose one of {', '.join(STRATEGIES)}")
        if on_conflict not in (None, *SIDES):
            raise InvalidArgumentError("on_conflict", on_conflict, "choose 'ours' or 'theirs'")
        pairs = _check_per_tensor(per_tensor)
        used = {strategy, *(choice for _, choice in pairs)}
        given = {"weights": weights, "density": density, "t": t, "seed": seed}
        for param, value in given.items():
            if value is not None and not (used & _USES[param]):
                raise InvalidArgumentError(
                    param, value, f"is not used by {_names(used)} (it is for {_names(_USES[param])})"
                )
        for name in sorted(used):
            needed = _REQUIRED.get(name)
            if needed and given[needed] is None:
                raise InvalidArgumentError(needed, None, f"{name} needs it ({_HINTS[needed]})")
        w = _check_weights(weights, needs_positive=bool(used & {"ties", "dare_ties"}))
        if density is not None and (not _is_real(density) or not 0.0 < float(density) <= 1.0):
            raise InvalidArgumentError("density", density, "must be in (0, 1]: the fraction of each task vector kept")
        if t is not None and (not _is_real(t) or not 0.0 <= float(t) <= 1.0):
            raise InvalidArgumentError("t", t, "must be in [0, 1] (0 gives ours, 1 gives theirs)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InvalidArgumentError("seed", seed, "must be a non-negative integer")
        if seed is None and used & RANDOM:
            seed = secrets.randbits(32)
        return cls(
            strategy,
            w,
            None if density is None else float(density),
            None if seed is None else int(seed),
            None if t is None else float(t),
            pairs,
            on_conflict,
        )

    @property
    def used(self) -> frozenset[str]:
        """Every strategy this merge may apply (the default and the per-tensor ones)."""
        return frozenset({self.strategy, *(choice for _, choice in self.per_tensor)})

    @property
    def needs_base(self) -> bool:
        return bool(self.used & NEEDS_BASE)

    def choice_for(self, name: str) -> str:
        """The strategy or side for tensor ``name``: the first matching per-tensor pattern, else the default."""
        for pattern, choice in self.per_tensor:
            if fnmatch.fnmatchcase(name, pattern):
                return choice
        return self.strategy

    def record(self) -> dict[str, Any]:
        """The parameters as they go into the merge commit's metadata (only those that were set)."""
        params: dict[str, Any] = {}
        if self.weights is not None:
            params["weights"] = list(self.weights)
        if self.density is not None:
            params["density"] = self.density
        if self.t is not None:
            params["t"] = self.t
        return params


_HINTS = {
    "weights": "weights=[w_ours, w_theirs], CLI --weights A,B",
    "density": "density in (0, 1], the fraction of each task vector kept; CLI --density",
    "t": "t in [0, 1], 0 = ours and 1 = theirs; CLI --t",
}


def _names(strategies: frozenset[str] | set[str]) -> str:
    return ", ".join(s for s in STRATEGIES if s in strategies)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(
        float(value)
    )


def _check_weights(weights: Sequence[float] | None, needs_positive: bool) -> tuple[float, float] | None:
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") or len(weights) != 2:
        raise InvalidArgumentError("weights", weights, "expected two numbers [w_ours, w_theirs]")
    if not all(_is_real(w) for w in weights):
        raise InvalidArgumentError("weights", weights, "expected two finite numbers [w_ours, w_theirs]")
    w = (float(weights[0]), float(weights[1]))
    if needs_positive and (min(w) < 0 or max(w) == 0):
        raise InvalidArgumentError(
            "weights", weights, "ties/dare_ties average by weight: use non-negative weights, not both 0"
        )
    return w


def _check_per_tensor(per_tensor: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if per_tensor is None:
        return ()
    if not isinstance(per_tensor, Mapping):
        raise InvalidArgumentError(
            "per_tensor", per_tensor, "expected a mapping {glob: strategy | 'ours' | 'theirs'}"
        )
    pairs = []
    for pattern, choice in per_tensor.items():
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgumentError("per_tensor", pattern, "patterns must be non-empty globs such as 'embed*'")
        if choice not in STRATEGIES:
            raise InvalidArgumentError(
                f"per_tensor[{pattern!r}]", choice, f"choose one of {', '.join(STRATEGIES)}"
            )
        pairs.append((pattern, choice))
    return tuple(pairs)


@dataclass
class MergeResult:
    """The merged tensors and how each was made."""

    weights: dict[str, WeightTensor]
    choices: dict[str, str] = field(default_factory=dict)  # tensor -> strategy or side applied
    non_float: dict[str, str] = field(default_factory=dict)  # integer/bool tensor -> side it was taken from
    resolved: dict[str, str] = field(default_factory=dict)  # conflicting tensor -> side it was taken from


def merge_tensors(
    ours: Mapping[str, WeightTensor],
    theirs: Mapping[str, WeightTensor],
    options: MergeOptions,
    base: Mapping[str, WeightTensor] | None = None,
) -> MergeResult:
    """Merge two weight sets as ``options`` say. Every check (names, shapes, dtypes, the merge base, the
    patterns) runs on metadata before any tensor is read; float tensors are combined in float64 (complex128)
    and cast back to their dtype; integer/bool tensors are taken whole from one side and reported."""
    names = sorted(ours.keys() | theirs.keys())
    for pattern, _choice in options.per_tensor:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise InvalidArgumentError("per_tensor", pattern, "matches no tensor of either side")
    if options.needs_base and base is None:
        raise InvalidArgumentError("base", None, f"{_names(options.used & NEEDS_BASE)} needs the merge base")
    int_side = options.on_conflict or "ours"
    result = MergeResult({})
    conflicts: dict[str, str] = {}
    bad: dict[str, str] = {}
    plan: dict[str, str] = {}
    for name in names:
        choice = options.choice_for(name)
        a, b = ours.get(name), theirs.get(name)
        if choice in SIDES:
            picked = a if choice == "ours" else b
            if picked is not None:
                result.weights[name] = picked
                result.choices[name] = choice
            continue
        if a is None or b is None:
            conflicts[name] = "missing in ours" if a is None else "missing in theirs"
        elif a.shape != b.shape:
            conflicts[name] = f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
        elif a.metadata.dtype != b.metadata.dtype:
            conflicts[name] = f"dtype {a.metadata.dtype} vs {b.metadata.dtype}"
        elif not is_float(a.metadata.dtype):
            result.weights[name] = a if int_side == "ours" else b
            result.non_float[name] = int_side
        elif choice in _REAL_ONLY and a.metadata.dtype.startswith("complex"):
            bad[name] = choice
        elif choice in NEEDS_BASE and _base_problem(name, a, base) is not None:
            conflicts[name] = _base_problem(name, a, base) or ""
        else:
            plan[name] = choice
    if bad:
        what = ", ".join(f"{n} is {ours[n].metadata.dtype}" for n in bad)
        raise InvalidArgumentError(
            "strategy", next(iter(bad.values())), f"needs real floating-point tensors: {what} (map to a side)"
        )
    if conflicts:
        if options.on_conflict is None:
            raise MergeConflictError(conflicts)
        side = ours if options.on_conflict == "ours" else theirs
        for name in conflicts:
            if name in side:
                result.weights[name] = side[name]
                result.resolved[name] = options.on_conflict
    for name, choice in plan.items():
        a = ours[name]
        c = base[name].data if base is not None and choice in NEEDS_BASE else None
        merged = _apply(name, choice, a.data, theirs[name].data, c, options)
        result.weights[name] = WeightTensor(
            merged.astype(a.data.dtype), WeightMetadata(name, a.shape, a.metadata.dtype, a.metadata.layer_type)
        )
        result.choices[name] = choice
    result.weights = dict(sorted(result.weights.items()))
    return result


def _base_problem(name: str, a: WeightTensor, base: Mapping[str, WeightTensor] | None) -> str | None:
    c = base.get(name) if base is not None else None
    if c is None:
        return "missing in the merge base"
    if c.shape != a.shape:
        return f"shape {tuple(c.shape)} in the merge base vs {tuple(a.shape)}"
    if not is_float(c.metadata.dtype):
        return f"dtype {c.metadata.dtype} in the merge base"
    return None


def _apply(
    name: str, choice: str, da: np.ndarray, db: np.ndarray, dc: np.ndarray | None, options: MergeOptions
) -> np.ndarray:
    wide = np.complex128 if da.dtype.kind == "c" else np.float64
    xa, xb = da.astype(wide), db.astype(wide)
    xc = dc.astype(wide) if dc is not None else None
    w = options.weights
    if choice == "average":
        return ms.linear(xa, xb, 0.5, 0.5)
    if choice == "weighted":
        assert w is not None
        return ms.linear(xa, xb, *w)
    if choice == "slerp":
        assert options.t is not None
        return ms.slerp(xa, xb, options.t)
    assert xc is not None
    wo, wt = w or (1.0, 1.0)
    if choice == "task_arithmetic":
        return ms.task_arithmetic(xc, xa, xb, wo, wt)
    assert options.density is not None
    if choice == "ties":
        return ms.ties(xc, xa, xb, wo, wt, options.density)
    assert options.seed is not None
    rngs = (tensor_rng(options.seed, name, 0), tensor_rng(options.seed, name, 1))
    if choice == "dare":
        return ms.dare(xc, xa, xb, wo, wt, options.density, rngs)
    return ms.dare_ties(xc, xa, xb, wo, wt, options.density, rngs)


def tensor_rng(seed: int, name: str, side: int) -> np.random.Generator:
    """The generator for one tensor of one side: derived from (seed, tensor name, side), so a tensor's random
    mask does not depend on which other tensors the merge holds or in what order they are merged."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(side, *words))))


def merge_weights(
    ours: Mapping[str, WeightTensor],
    theirs: Mapping[str, WeightTensor],
    strategy: str,
    weights: Sequence[float] | None,
    base: Mapping[str, WeightTensor] | None = None,
    on_conflict: str | None = None,
    **params: Any,
) -> dict[str, WeightTensor]:
    """Combine two weight sets with ``strategy`` (``params``: density, seed, t, per_tensor); see merge_tensors."""
    options = MergeOptions.check(strategy, weights, on_conflict=on_conflict, **params)
    return merge_tensors(ours, theirs, options, base).weights


def merge_into_head(
    repo: Repository,
    other: str,
    strategy: str = "average",
    weights: Sequence[float] | None = None,
    message: str | None = None,
    *,
    on_conflict: str | None = None,
    density: float | None = None,
    seed: int | None = None,
    t: float | None = None,
    per_tensor: Mapping[str, str] | None = None,
) -> str:
    """``Repository.merge``: checks everything, merges in memory, then writes the two-parent merge commit.

    Returns HEAD unchanged when ``other`` is already contained in it (git's "Already up to date")."""
    options = MergeOptions.check(
        strategy, weights, density=density, seed=seed, t=t, per_tensor=per_tensor, on_conflict=on_conflict
    )
    ours_id = repo.head_commit()
    if ours_id is None:
        raise RefNotFoundError("cannot merge into an empty branch")
    if repo.staged:  # the merge commit would silently carry them
        raise CoralError(
            f"{len(repo.staged)} tensor(s) are staged ({', '.join(sorted(repo.staged)[:3])}...): commit them "
            "before merging"
        )
    theirs_id = repo.resolve(other)
    if theirs_id == ours_id or repo.merge_base(ours_id, theirs_id) == theirs_id:
        log.info("merge: %s is already contained in HEAD; already up to date", other)
        return ours_id
    base_id = repo.merge_base(ours_id, theirs_id) if options.needs_base else None
    if options.needs_base and base_id is None:
        raise CoralError(f"no common ancestor of HEAD and {other!r}: {_names(options.used & NEEDS_BASE)} needs one")
    ours, theirs = repo.get_weights(ours_id), repo.get_weights(theirs_id)
    base = repo.get_weights(base_id) if base_id else None
    result = merge_tensors(ours, theirs, options, base)
    branch = repo.current_branch
    repo.stage_weights(result.weights)
    commit_id = repo.commit(
        message or f"Merge {other} into {branch or 'HEAD'} ({strategy})",
        {"merge": merge_record(options, result, ours_id, theirs_id, base_id)},
        parents=[theirs_id],
    )
    if branch is None:
        log.warning(
            "HEAD is detached: merge commit %s is on no branch and will be lost on the next checkout; "
            "keep it with `coral branch NAME %s`", commit_id[:8], commit_id[:8],
        )
    return commit_id


def merge_record(
    options: MergeOptions, result: MergeResult, ours_id: str, theirs_id: str, base_id: str | None
) -> dict[str, Any]:
    """What the merge commit's metadata says about how it was made (``coral show`` prints it)."""
    params = options.record()
    record: dict[str, Any] = {
        "strategy": options.strategy,
        "weights": params.get("weights"),
        "params": params,
        "seed": options.seed,
        "ours": ours_id,
        "other": theirs_id,
        "base": base_id,
    }
    if options.per_tensor:
        record["per_tensor"] = dict(options.per_tensor)
    if result.non_float:
        record["non_float_from"] = dict(result.non_float)
    if result.resolved:
        record["conflicts_from"] = dict(result.resolved)
    return record
