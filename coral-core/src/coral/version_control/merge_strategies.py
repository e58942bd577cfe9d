"""The arithmetic of each merge strategy on one tensor: pure numpy functions over float64 (or complex128) arrays.

``ours``/``theirs`` are the two sides, ``base`` their merge base; a task vector is ``side - base``. Every
function is deterministic: the same inputs (and, for DARE, the same generator) give bit-identical output.
"""

from __future__ import annotations

import math

import numpy as np

#: cos(angle) above which two vectors count as parallel and slerp falls back to linear interpolation
SLERP_PARALLEL_COS = 0.9995


def linear(ours: np.ndarray, theirs: np.ndarray, w_ours: float, w_theirs: float) -> np.ndarray:
    """``w_ours * ours + w_theirs * theirs`` (``average`` is 0.5/0.5, ``weighted`` the given pair)."""
    return w_ours * ours + w_theirs * theirs


def task_arithmetic(
    base: np.ndarray, ours: np.ndarray, theirs: np.ndarray, w_ours: float, w_theirs: float
) -> np.ndarray:
    """``base + w_ours * (ours - base) + w_theirs * (theirs - base)``: adds both task vectors to the base."""
    return base + w_ours * (ours - base) + w_theirs * (theirs - base)


def keep_count(density: float, size: int) -> int:
    """How many entries a trim to ``density`` keeps: ``ceil(density * size)``, at least 1 (0 for empty tensors)."""
    if size == 0:
        return 0
    return min(size, max(1, math.ceil(density * size - 1e-9)))


def trim(task: np.ndarray, density: float) -> np.ndarray:
    """TIES trim: keep the ``keep_count`` largest magnitudes, zero the rest. Among equal magnitudes at the
    threshold the lower flat index is kept, so the result never depends on sort internals. NaN ranks as the
    largest magnitude, so a diverged entry is kept (and shows in the merge) rather than silently trimmed."""
    flat = task.reshape(-1)
    k = keep_count(density, flat.size)
    if k >= flat.size:
        return task.copy()
    mag = np.abs(flat)
    mag[np.isnan(mag)] = np.inf
    threshold = np.partition(mag, flat.size - k)[flat.size - k]
    keep = mag > threshold
    at = np.flatnonzero(mag == threshold)
    keep[at[: k - int(keep.sum())]] = True
    return np.where(keep, flat, 0.0).reshape(task.shape)


def disjoint_mean(tasks: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """TIES sign election and disjoint merge: the sign of ``sum(w_i * task_i)`` wins per entry, and the entry
    becomes the weighted mean of the non-zero task values that have that sign (0 where none has); NaN where
    the vote is NaN (a NaN or inf - inf among the kept values), as ``average`` would give."""
    elected = np.sign(sum(w * t for w, t in zip(weights, tasks, strict=True)))
    num = np.zeros_like(tasks[0])
    den = np.zeros_like(tasks[0])
    for w, t in zip(weights, tasks, strict=True):
        agree = (t != 0) & (np.sign(t) == elected)
        num += np.where(agree, w * t, 0.0)
        den += np.where(agree, w, 0.0)
    merged = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(np.isnan(elected), np.nan, merged)


def ties(
    base: np.ndarray, ours: np.ndarray, theirs: np.ndarray, w_ours: float, w_theirs: float, density: float
) -> np.ndarray:
    """TIES-merging (Yadav et al. 2023): trim each task vector to ``density``, elect signs, disjoint mean."""
    tasks = [trim(ours - base, density), trim(theirs - base, density)]
    return base + disjoint_mean(tasks, [w_ours, w_theirs])


def dare_drop(task: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """DARE (Yu et al. 2023): keep each entry with probability ``density`` and rescale kept ones by 1/density,
    i.e. drop a fraction p = 1 - density and rescale by 1/(1 - p)."""
    if density >= 1.0:
        return task
    keep = rng.random(task.shape) < density
    return np.where(keep, task / density, 0.0)


def dare(
    base: np.ndarray,
    ours: np.ndarray,
    theirs: np.ndarray,
    w_ours: float,
    w_theirs: float,
    density: float,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> np.ndarray:
    """DARE then task arithmetic: ``base + w_ours * dare(ours - base) + w_theirs * dare(theirs - base)``."""
    return base + w_ours * dare_drop(ours - base, density, rngs[0]) + w_theirs * dare_drop(
        theirs - base, density, rngs[1]
    )


def dare_ties(
    base: np.ndarray,
    ours: np.ndarray,
    theirs: np.ndarray,
    w_ours: float,
    w_theirs: float,
    density: float,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> np.ndarray:
    """DARE's random drop in place of TIES' magnitude trim, then TIES' sign election and disjoint mean."""
    tasks = [dare_drop(ours - base, density, rngs[0]), dare_drop(theirs - base, density, rngs[1])]
    return base + disjoint_mean(tasks, [w_ours, w_theirs])


def slerp(ours: np.ndarray, theirs: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of the two tensors seen as flat vectors (t=0: ours, t=1: theirs); linear
    interpolation where they are nearly parallel (|cos| > SLERP_PARALLEL_COS), one of them is zero, or a NaN/inf
    leaves no angle (the non-finite values then carry through, as in ``average``)."""
    a, b = ours.reshape(-1), theirs.reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return (1.0 - t) * ours + t * theirs
    cos = float(np.dot(a, b)) / (na * nb)
    if not math.isfinite(cos) or abs(cos) > SLERP_PARALLEL_COS:
        return (1.0 - t) * ours + t * theirs
    theta = math.acos(max(-1.0, min(1.0, cos)))
    s = math.sin(theta)
    return (math.sin((1.0 - t) * theta) / s) * ours + (math.sin(t * theta) / s) * theirs
