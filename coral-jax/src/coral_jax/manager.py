"""CoralCheckpointManager: Orbax's CheckpointManager verbs, with every save a Coral commit.

Steps map to commits in a small index document (``jax-checkpoints/<name>``); unchanged arrays are stored
once (content addressing) and changed ones as deltas against the next step. Retention prunes commits the
options no longer keep and reclaims their space with ``gc``; history still lists them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import jax
import numpy as np
from coral import Repository
from coral.errors import ConfigError, InvalidArgumentError, RefNotFoundError
from coral.training import (
    BackgroundPusher,
    BackgroundSaver,
    CheckpointConfig,
    PreemptionGuard,
    RetentionRules,
    capture_random_state,
    prune_commits,
    restore_random_state,
    select_kept,
)
from coral.training.config import check_push_to
from coral.training.tensors_in_state import join_state, split_state
from coral.version_control.background import exit_wait_limit
from coral.version_control.jsonsafe import from_jsonable, to_jsonable
from coral.version_control.names import validate_ref_name

from .commits import META_KEY, commit_arrays, open_repository
from .pytree import flatten_pytree, unflatten_pytree

log = logging.getLogger(__name__)

RNG_PREFIX = "__rng__"
"""Tensor-name prefix of the generator states a manager captures with ``save_rng_state=True``."""


@dataclass(frozen=True)
class CoralCheckpointManagerOptions:
    """The Orbax ``CheckpointManagerOptions`` that matter here, with the same meaning.

    ``max_to_keep``: keep the newest N (or, with ``best_fn``, the N best by ``best_fn(metrics)`` under
    ``best_mode`` "max"/"min"); ``keep_period``: also keep every step divisible by it;
    ``save_interval_steps``: ``save`` skips steps not divisible by it (the first save always happens);
    ``enable_async``: write in a background thread, one save in flight at a time: a save asked for while the
    previous one is still being written waits for it, or with ``skip_save_if_busy`` is skipped with a warning
    (``save`` returns False). Unlike Orbax the newest checkpoint is always kept, so
    there is always a resume point. ``save_rng_state`` captures every plugin's generators (python, numpy,
    torch, tracked JAX keys) and ``restore`` puts them back; ``use_deltas`` delta-encodes the previous step;
    ``push_to`` names a remote each saved step is pushed to in the background (``wait_until_finished`` waits).
    ``save_on_preemption`` / ``preemption_signals`` / ``preemption_deadline``: as in CheckpointConfig; test
    ``reached_preemption(step)`` in the loop.
    """

    max_to_keep: int | None = None
    keep_period: int | None = None
    best_fn: Callable[[Mapping[str, Any]], float] | None = None
    best_mode: str = "max"
    keep_checkpoints_without_metrics: bool = True
    save_interval_steps: int = 1
    enable_async: bool = False
    skip_save_if_busy: bool = False
    save_rng_state: bool = False
    use_deltas: bool = True
    push_to: str | None = None
    save_on_preemption: bool = True
    preemption_signals: tuple[str, ...] = ("SIGTERM",)
    preemption_deadline: float = 90.0

    def __post_init__(self) -> None:
        check_push_to(self.push_to)
        # the same checks (and one-line errors) as CheckpointConfig's
        CheckpointConfig(
            save_on_preemption=self.save_on_preemption, preemption_signals=self.preemption_signals,
            preemption_deadline=self.preemption_deadline,
        )
        for name in ("max_to_keep", "keep_period"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(name, v, "must be a positive integer or None")
        v = self.save_interval_steps
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError("save_interval_steps", v, "must be a positive integer")
        if self.best_fn is not None and not callable(self.best_fn):
            raise ConfigError("best_fn", self.best_fn, "must be callable(metrics) -> number")
        if self.best_mode not in ("max", "min"):
            raise ConfigError("best_mode", self.best_mode, "must be 'max' or 'min'")
        for name in (
            "keep_checkpoints_without_metrics", "enable_async", "skip_save_if_busy", "save_rng_state", "use_deltas",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be True or False")


def _index_name(name: str) -> str:
    return f"jax-checkpoints/{name}"


def read_index(repo: Repository, name: str) -> list[dict[str, Any]]:
    """The live checkpoints of manager ``name``, sorted by step (metrics decoded)."""
    doc = repo.read_document(_index_name(name)) or {}
    entries = [dict(e) for e in doc.get("checkpoints", [])]
    for e in entries:
        e["metrics"] = from_jsonable(e.get("metrics"))
    return sorted(entries, key=lambda e: e["step"])


def register_step(repo: Repository, name: str, step: int, commit: str, metrics: Any) -> list[dict[str, Any]]:
    """Record ``step -> commit`` in manager ``name``'s index (replacing an older entry for the step)."""
    entry = {"step": int(step), "commit": commit, "metrics": metrics, "time": time.time()}

    def update(old: Any) -> dict[str, Any]:
        entries = [e for e in (old or {}).get("checkpoints", []) if e["step"] != step]
        return {"format": 1, "checkpoints": sorted(entries + [entry], key=lambda e: e["step"])}

    repo.update_document(_index_name(name), update)
    return read_index(repo, name)


def _drop_steps(repo: Repository, name: str, steps: set[int]) -> None:
    def update(old: Any) -> dict[str, Any]:
        return {
            "format": 1,
            "checkpoints": [e for e in (old or {}).get("checkpoints", []) if e["step"] not in steps],
        }

    repo.update_document(_index_name(name), update)


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InvalidArgumentError("step", step, "must be a non-negative integer")
    return int(step)


def _metrics_json(metrics: Any) -> Any:
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError("metrics", type(metrics).__name__, "must be a dict of name -> number")
    return to_jsonable(jax.device_get(dict(metrics)), "metrics")


class CoralCheckpointManager:
    """Save and restore pytrees by step, as with ``orbax.checkpoint.CheckpointManager``, into a Coral repository.

    ``CoralCheckpointManager(repo_or_path, options=None, name=None, **options)``: keyword options override
    ``options``; ``name`` (default: the current branch) keeps several managers apart in one repository.
    """

    def __init__(
        self,
        repository: Repository | str | os.PathLike[str],
        options: CoralCheckpointManagerOptions | None = None,
        *,
        name: str | None = None,
        **option_overrides: Any,
    ) -> None:
        self.repository = open_repository(repository)
        opts = options if options is not None else CoralCheckpointManagerOptions()
        if not isinstance(opts, CoralCheckpointManagerOptions):
            raise InvalidArgumentError(
                "options", type(opts).__name__, "expected CoralCheckpointManagerOptions"
            )
        known = {f.name for f in dataclasses.fields(CoralCheckpointManagerOptions)}
        for key, value in option_overrides.items():
            if key not in known:
                raise ConfigError(key, value, f"unknown option (known: {', '.join(sorted(known))})")
        self.options = dataclasses.replace(opts, **option_overrides) if option_overrides else opts
        self.name = validate_ref_name(name or self.repository.current_branch or "default", "manager name")
        self._lock = threading.RLock()
        self._saver = BackgroundSaver(f"jax-{self.name}")
        push_to = self.options.push_to
        self._pusher = BackgroundPusher(self.repository, push_to) if push_to else None
        self._inflight: int | None = None
        self._checkpoints = read_index(self.repository, self.name)
        o = self.options
        self._preemption = PreemptionGuard(o.save_on_preemption, o.preemption_signals, o.preemption_deadline)
        self._preemption.install()

    def __repr__(self) -> str:
        return f"CoralCheckpointManager({self.repository!r}, name={self.name!r}, steps={self.all_steps()})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close()
        if exc_type is None:
            self.exit_if_preempted()

    # ---- preemption --------------------------------------------------------------------------------------
    def reached_preemption(self, step: int) -> bool:
        """True once a preemption signal arrived (as Orbax spells it): ``save(step, items, force=True)`` now
        writes synchronously, marked ``preempted``, then ``should_stop`` turns True."""
        _check_step(step)
        return self._preemption.check() or self._preemption.due

    @property
    def should_stop(self) -> bool:
        """True once the preemption checkpoint is saved: end the training loop."""
        return self._preemption.should_stop

    def exit_if_preempted(self) -> None:
        """Raise ``SystemExit(128 + signum)`` (143 for SIGTERM) if the run stopped for a preemption."""
        self._preemption.exit_if_preempted()

    # ---- queries -----------------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Every kept step, ascending (a step being written asynchronously included)."""
        with self._lock:
            steps = {e["step"] for e in self._checkpoints}
            if self._inflight is not None:
                steps.add(self._inflight)
            return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best step by ``best_fn``/``best_mode`` (the latest when there is no ``best_fn``), or None."""
        if self.options.best_fn is None:
            return self.latest_step()
        self.wait_until_finished()
        ranked = self._ranked([e for e in self._checkpoints if e.get("metrics") is not None])
        return ranked[-1]["step"] if ranked else None

    def metrics(self, step: int) -> dict[str, Any] | None:
        """The metrics saved with ``step`` (None when saved without)."""
        return self._entry(step).get("metrics")

    def commit_hash(self, step: int) -> str:
        """The Coral commit holding ``step`` (for ``coral log``, ``diff``, tags, ``export_orbax``)."""
        return self._entry(step)["commit"]

    def should_save(self, step: int) -> bool:
        """True when ``save(step)`` would write: newer than the latest, and the first save or on the interval."""
        step = _check_step(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            return False
        return latest is None or step % self.options.save_interval_steps == 0

    def reload(self) -> None:
        """Re-read the step index (another process saved into the same repository)."""
        self.wait_until_finished()
        with self._lock:
            self._checkpoints = read_index(self.repository, self.name)

    def _entry(self, step: int) -> dict[str, Any]:
        step = _check_step(step)
        self.wait_until_finished()
        for e in self._checkpoints:
            if e["step"] == step:
                return e
        raise RefNotFoundError(
            f"no checkpoint for step {step} in manager {self.name!r} (steps: {self.all_steps()})"
        )

    def _ranked(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entries sorted so the best is last (Orbax's order)."""
        fn = self.options.best_fn
        assert fn is not None
        return sorted(entries, key=lambda e: fn(e["metrics"]), reverse=self.options.best_mode == "min")

    # ---- save --------------------------------------------------------------------------------------------
    def save(
        self, step: int, items: Any, metrics: Mapping[str, Any] | None = None, *, force: bool = False
    ) -> bool:
        """Save the pytree ``items`` as ``step`` (one commit); returns False when ``should_save`` says no.

        ``items`` may hold CheckpointableIterators (their ``get_state()`` is saved). With ``enable_async`` the
        save keeps host views of the (immutable) jax arrays, copies nothing on CPU, and hashes and writes them
        in a background thread (docs/jax_snapshots.md: why a later ``donate_argnums`` step cannot change them).
        """
        step = _check_step(step)
        self._raise_pending()
        if not force and not self.should_save(step):
            return False
        if step in self.all_steps():
            raise InvalidArgumentError("step", step, "already has a checkpoint; delete(step) first")
        if self.options.best_fn is not None and metrics is None:
            log.warning("step %d saved without metrics while best_fn is set", step)
        preempted = self._preemption.due and not self._preemption.should_stop
        asynchronous = self.options.enable_async and not preempted
        if asynchronous and self.options.skip_save_if_busy and self._inflight is not None:
            log.warning(
                "step %d not saved: the save of step %s is still being written (skip_save_if_busy)",
                step, self._inflight,
            )
            return False
        # jax arrays are immutable: host views of them (no copy on CPU; the device-to-host transfer on an
        # accelerator, as Orbax does) cannot change, even when the next jitted step donates the buffers
        arrays, structure = flatten_pytree(items, snapshot=asynchronous)
        for n in arrays:
            if n.split("/", 1)[0] == RNG_PREFIX:
                raise InvalidArgumentError("items", n, f"names starting with {RNG_PREFIX}/ are reserved")
        metrics_json = _metrics_json(metrics)
        rng_skeleton = None
        if self.options.save_rng_state:
            rng_arrays: dict[str, np.ndarray] = {}
            rng_skeleton = split_state(capture_random_state(), RNG_PREFIX, rng_arrays)
            arrays.update({n: np.array(a, copy=True) for n, a in rng_arrays.items()})
        job = (step, arrays, structure, metrics_json, rng_skeleton)
        if not asynchronous:
            extra = None
            if preempted:
                self.wait_until_finished()  # a save in flight finishes first
                extra = self._preemption.metadata(step)
            cid = self._write(*job, extra=extra)
            if preempted:
                self._preemption.finish(self.wait_until_finished, cid)
            return True
        self._saver.wait()  # the previous save, not the pushes: the training loop never waits on the network
        self._raise_pending()
        with self._lock:
            self._inflight = step
        self._saver.start(self._write, *job, on_done=self._finished)
        return True

    def _finished(self) -> None:
        with self._lock:
            self._inflight = None

    def _write(
        self, step: int, arrays: dict[str, np.ndarray], structure: Any, metrics: Any, rng_skeleton: Any,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        repo = self.repository
        info: dict[str, Any] = {"step": step, "manager": self.name, "metrics": metrics}
        if rng_skeleton is not None:
            info["rng"] = rng_skeleton
        meta = {"step": step, "global_step": step, "metrics": metrics or {}, **(extra or {})}
        cid = commit_arrays(
            repo, arrays, structure, f"Checkpoint step {step}", meta, info, pack=self.options.use_deltas
        )
        entries = register_step(repo, self.name, step, cid, metrics)
        with self._lock:
            self._checkpoints = entries
        self._apply_retention()
        # packing (deltas) of the previous step runs in the repository's background packer after the commit
        if self._pusher is not None:  # in the background: the training loop never waits on the network
            self._pusher.request()
        return cid

    def _raise_pending(self) -> None:
        """Raise (once) the error of a background save or push that failed."""
        self._saver.raise_pending()
        if self._pusher is not None:
            self._pusher.raise_pending()

    def wait_until_finished(self) -> bool:
        """Block until a background save is written and pushed (``push_to``); re-raise an error if one failed.
        After a preemption the push is waited for only until its deadline (the process is stopping): False
        when it did not finish by then."""
        self._saver.wait()
        if self._pusher is not None and not self._pusher.wait(exit_wait_limit()):
            log.debug("the push to %r did not finish within preemption_deadline; the remote lacks the newest "
                      "checkpoint (the local commit is complete)", self._pusher.remote)
            return False
        return True

    def close(self) -> None:
        """Finish pending writes and put the signal handlers back."""
        self.wait_until_finished()
        self._preemption.uninstall()

    # ---- retention ---------------------------------------------------------------------------------------
    def _retention_rules(self) -> RetentionRules:
        """Orbax's options as core's keep rules: ``max_to_keep=None`` keeps everything."""
        opts = self.options
        if opts.max_to_keep is None:
            return RetentionRules()
        best_fn = opts.best_fn
        if best_fn is None:
            return RetentionRules(last_n=opts.max_to_keep, every_n=opts.keep_period, period_of=_step_of)
        return RetentionRules(
            best_n=opts.max_to_keep,
            rank=lambda e: None if e.get("metrics") is None else best_fn(e["metrics"]),
            minimize=opts.best_mode == "min",
            keep_unranked=opts.keep_checkpoints_without_metrics,
            every_n=opts.keep_period,
            period_of=_step_of,
        )

    def _apply_retention(self) -> None:
        with self._lock:
            entries = list(self._checkpoints)
        drop = [e for e, k in zip(entries, select_kept(entries, self._retention_rules()), strict=True) if not k]
        if drop:
            self._remove(drop)

    def _remove(self, entries: list[dict[str, Any]]) -> None:
        repo = self.repository
        prune_commits(repo, [e["commit"] for e in entries])
        _drop_steps(repo, self.name, {e["step"] for e in entries})
        with self._lock:
            self._checkpoints = read_index(repo, self.name)

    def delete(self, step: int) -> None:
        """Forget ``step`` and free its arrays (the commit stays in history, marked pruned)."""
        self._remove([self._entry(step)])

    # ---- restore -----------------------------------------------------------------------------------------
    def restore(self, step: int | None = None, items_like: Any = None) -> Any:
        """The pytree saved at ``step`` (default: the latest).

        With ``items_like`` the result has its exact structure, classes, dtypes and shardings, and iterators in
        it are restored in place; without it dicts/lists/tuples are rebuilt from the stored structure.
        """
        self.wait_until_finished()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise RefNotFoundError(f"manager {self.name!r} has no checkpoints in {self.repository!r}")
        cid = self._entry(step)["commit"]
        repo = self.repository
        weights = repo.get_weights(cid)
        info = repo.get_commit(cid).metadata.get(META_KEY) or {}
        items = {n: w for n, w in weights.items() if n.split("/", 1)[0] != RNG_PREFIX}
        tree = unflatten_pytree(items, info.get("structure"), items_like)
        if self.options.save_rng_state and info.get("rng") is not None:
            rng = {n: w.data for n, w in weights.items() if n.split("/", 1)[0] == RNG_PREFIX}
            restore_random_state(join_state(info["rng"], rng))
        return tree


def _step_of(entry: dict[str, Any]) -> int:
    return int(entry["step"])


__all__ = ["CoralCheckpointManager", "CoralCheckpointManagerOptions"]
