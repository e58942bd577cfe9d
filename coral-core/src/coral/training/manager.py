"""CheckpointManager: the front of the training layer; one experiment's checkpoints in a Repository.

It asks its SavePolicy (policy.py) whether to save, writes through writer.py (synchronously or in a
BackgroundSaver), keeps what the retention rules keep (retention.py), records everything in the persisted
CheckpointHistory (history.py), tags releases (releases.py) and, with ``push_to``, hands each new checkpoint
to a BackgroundPusher (pusher.py). Each checkpoint is one commit (layout.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from ..core.weight_tensor import WeightTensor
from ..errors import InvalidArgumentError, RefNotFoundError
from ..version_control.background import exit_wait_limit
from ..version_control.repository import Repository
from ..version_control.staging import normalize_weights
from . import releases
from .config import CheckpointConfig
from .history import CheckpointHistory
from .layout import (
    STATE_PREFIXES,
    capture_state,
    check_extra_metadata,
    check_weight_names,
    load_checkpoint_commit,
    model_only,
)
from .policy import SavePolicy
from .provenance import Provenance
from .pusher import BackgroundPusher
from .retention import prune_commits, select_kept
from .rng import restore_random_state
from .snapshot import Guard, HostSnapshot
from .state import TrainingState
from .writer import BackgroundSaver, check_free_space, checkpoint_metadata, commit_message

log = logging.getLogger(__name__)

__all__ = ["STATE_PREFIXES", "CheckpointManager", "load_checkpoint_commit", "restore_random_state"]


class CheckpointManager:
    """Connects a Repository and a CheckpointConfig for one experiment; history survives restarts."""

    def __init__(
        self,
        repository: Repository,
        config: CheckpointConfig | None = None,
        model_name: str | None = None,
        experiment_name: str | None = None,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise InvalidArgumentError("repository", type(repository).__name__, "expected a coral Repository")
        config = config if config is not None else CheckpointConfig()
        if not isinstance(config, CheckpointConfig):
            raise InvalidArgumentError("config", type(config).__name__, "expected a CheckpointConfig")
        self.repository = repository
        self.policy = SavePolicy(config)
        self.model_name = model_name
        self.experiment_name = experiment_name or datetime.now().strftime("experiment_%Y%m%d_%H%M%S")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", self.experiment_name):
            raise InvalidArgumentError(
                "experiment_name", self.experiment_name, "use letters, digits, '.', '_' and '-'"
            )
        self.provenance = Provenance(hparams)  # provenance: versions, device, code commit, hparams (issue 29)
        self._callbacks: list[Callable[[TrainingState, str | None], None]] = []
        self._lock = threading.RLock()
        self._saver = BackgroundSaver(self.experiment_name)
        self._snapshot = HostSnapshot()  # the async saves' host copy, in buffers reused from save to save
        self._pusher = BackgroundPusher(repository, config.push_to) if config.push_to else None
        self.history = CheckpointHistory(repository, self.experiment_name, model_name)
        self.history.load(self.policy)

    # ---- the policy's state, as attributes (public API) ----------------------------------------------------
    @property
    def config(self) -> CheckpointConfig:
        return self.policy.config

    @config.setter
    def config(self, value: CheckpointConfig) -> None:
        self.policy.config = value

    @property
    def checkpoint_history(self) -> list[dict[str, Any]]:
        """Every checkpoint saved, oldest first; pruned ones are marked ``"pruned": True``."""
        return self.history.records

    @property
    def best_metric_value(self) -> float | None:
        return self.policy.best_metric_value

    @property
    def best_checkpoint_hash(self) -> str | None:
        return self.policy.best_checkpoint_hash

    @property
    def no_improvement_count(self) -> int:
        return self.policy.no_improvement_count

    @property
    def auto_save_interval(self) -> int | None:
        """The Young-Daly interval in steps chosen so far (``save_every_n_steps="auto"``), or None."""
        return self.policy.auto_interval()

    @property
    def should_stop_early(self) -> bool:
        return self.policy.should_stop_early

    @property
    def last_commit_hash(self) -> str | None:
        return self.history.records[-1]["commit_hash"] if self.history.records else None

    def should_save_checkpoint(self, state: TrainingState) -> bool:
        """True when any condition holds: every N steps, every N epochs, or the watched metric improved."""
        if not isinstance(state, TrainingState):
            raise InvalidArgumentError("state", type(state).__name__, "expected a TrainingState")
        return self.policy.should_save(state)

    # ---- saving ------------------------------------------------------------------------------------------
    def save_checkpoint(
        self, weights: Mapping[str, Any], state: TrainingState, force: bool = False,
        metadata: Mapping[str, Any] | None = None, synchronous: bool = False, lazy_guard: Guard | None = None,
    ) -> str | None:
        """Save a checkpoint when the policy says so (or ``force``); returns the commit hash or None.

        ``metadata`` adds JSON-safe keys to the commit metadata (e.g. a framework's run arguments); the keys
        the manager writes itself (``coral_checkpoint``, ``epoch``, ``global_step``, ``loss``, ``metrics``) are
        reserved.

        With ``async_save`` the hash is returned at once (the commit is computed from the content) and the
        write finishes in the background; call ``wait()`` to be sure it is on disk. ``synchronous=True`` writes
        in this thread whatever ``async_save`` says (the preemption checkpoint).

        ``lazy_guard`` (async only) asks for the lazy snapshot: the host copy of ``weights`` and the state's
        arrays is made in the background, and the caller must keep them unchanged until ``wait_snapshot()``
        returns (an integration gates its optimizer's step on it). ``lazy_guard(name)`` says whether a tensor
        changed since this call (None: unchanged); a changed one fails the save (SnapshotChangedError at the
        next save or ``wait()``) instead of committing a mix of two states.
        """
        if not isinstance(state, TrainingState):
            raise InvalidArgumentError("state", type(state).__name__, "expected a TrainingState")
        background = self.config.async_save and not synchronous
        extra = dict(metadata or {})
        check_extra_metadata(extra)
        if not force and not self._may_be_due(state):  # the loop's every-step call: nothing to wait for
            self._saver.raise_pending()
            if self._pusher is not None:
                self._pusher.raise_pending()
            return None
        if background and self.config.skip_save_if_busy and self._saver.busy:
            log.warning(
                "checkpoint at step %d skipped: the previous async save is still being written (skip_save_if_busy)",
                state.global_step,
            )
            return None
        # one save in flight at a time: the previous one finishes (and reports its error) first; a push in
        # flight is not waited for (the training loop never waits on the network), only its error is raised
        self._saver.wait()
        if self._pusher is not None:
            self._pusher.raise_pending()
        with self._lock:
            should = force or self.policy.should_save(state)
            if self.policy.update_early_stopping(state) and not should:
                self.history.persist(self.policy)
            if not should:
                return None
            value = self.policy.metric(state)
            is_best = self.policy.is_best(value)
            named = normalize_weights(weights)
            check_weight_names(named)
            arrays, skeletons = capture_state(state, self.config)
            size = sum(w.nbytes for w in named.values()) + sum(a.nbytes for a in arrays.values())
            check_free_space(self.repository, self.config.min_free_space, size)
            job = (named, arrays, skeletons, state, value, is_best, extra)
            if background:
                self._snapshot.retain_only(set(named) | set(arrays))
                if lazy_guard is None:  # the copying snapshot: the only stall the training thread feels
                    copies = self._snapshot.copy(named), self._snapshot.copy(arrays)
                    self._saver.start(self._write, *copies, *job[2:])
                else:  # the lazy snapshot: copied in the background, gated by wait_snapshot()
                    self._snapshot.begin()
                    self._saver.start(self._copy_and_write, lazy_guard, *job, on_done=self._snapshot.end)
                return None  # the hash lands in checkpoint_history once written; see wait()
            return self._write(*job)

    def _may_be_due(self, state: TrainingState) -> bool:
        """Whether ``state`` may be due, decided before waiting for a save in flight; False keeps the
        early-stopping count. An unrecorded save in flight can only make the policy say "save" more often
        (an older last save, an older best), never less: "not due" is final, and "due" is decided again
        once that save is recorded."""
        with self._lock:
            if self.policy.should_save(state):
                return True
            if self.policy.update_early_stopping(state):
                self.history.persist(self.policy)
            return False

    def _copy_and_write(
        self, guard: Guard, named: dict[str, WeightTensor], arrays: dict[str, np.ndarray], *job: Any
    ) -> str | None:
        try:
            named, arrays = self._snapshot.copy(named, guard), self._snapshot.copy(arrays, guard)
        finally:
            self._snapshot.end()  # the live tensors may change from here on (or the copy failed: never made)
        return self._write(named, arrays, *job)

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Block until the lazy snapshot in flight is copied out of the live tensors (at once when none is);
        False if ``timeout`` seconds passed first. The write itself may still be running: see ``wait()``."""
        return self._snapshot.wait_copied(timeout)

    @property
    def save_in_flight(self) -> bool:
        """True while an async save is still being copied or written."""
        return self._saver.busy

    def wait(self, packing: bool = True) -> bool:
        """Block until pending async saves are written, background pushes (``push_to``) done and the
        repository's background packing finished; raise if a save or push failed. After a preemption the
        push and packing are waited for only until its deadline (the process is stopping): False
        when they did not finish by then. ``packing=False`` (what the end of a run uses) does not wait for
        packing: it goes on in the background and, at exit, in a detached process."""
        self._saver.wait()
        limit = exit_wait_limit()  # None unless a preemption set it
        if self._pusher is not None and not self._pusher.wait(limit):
            log.debug("the push to %r did not finish within preemption_deadline; the remote lacks the newest "
                      "checkpoint (the local commit is complete)", self._pusher.remote)
            return False
        return self.repository.wait(limit) if packing else True

    def _write(
        self,
        named: dict[str, WeightTensor],
        arrays: dict[str, np.ndarray],
        skeletons: dict[str, Any],
        state: TrainingState,
        value: float | None,
        is_best: bool,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        repo, cfg = self.repository, self.config
        started = time.perf_counter()
        all_weights: dict[str, Any] = dict(named)
        all_weights.update(arrays)
        if not cfg.auto_commit:
            repo.stage_weights(all_weights)
            return None
        metadata = checkpoint_metadata(
            state, self.experiment_name, self.model_name, list(named), skeletons, is_best, extra
        )
        message = commit_message(cfg.commit_message_template, state, self.experiment_name)
        for key, recorded in self.provenance.capture(state.optimizer_state).items():  # issue 29
            metadata.setdefault(key, recorded)
        parented = repo.head_commit() is not None  # a root commit has nothing to pack against it
        # chunks and commit under one writers' lock: a gc in another process cannot interleave
        commit_hash = repo.commit_weights(all_weights, message, metadata, pack=False)
        with self._lock:
            self.policy.record_save(state, commit_hash, value, is_best)
            if is_best and cfg.tag_best_checkpoints:
                repo.move_tag(f"best-{self.experiment_name}", commit_hash, f"best {cfg.save_on_best_metric}={value}")
            self.history.append(commit_hash, state, value, is_best)
            self._apply_retention()
            self.history.persist(self.policy)
        if cfg.use_incremental_saves and parented:  # after the bookkeeping: the previous checkpoint packed
            repo.packer.enqueue(commit_hash)  # against this one, in the background packer, never in this thread
            # (not queue_packing: it reads back the commit just written to find its parent)
        self.policy.record_cost(time.perf_counter() - started)
        for cb in list(self._callbacks):
            try:
                cb(state, commit_hash)
            except Exception as exc:
                log.error("checkpoint callback %s failed: %s", getattr(cb, "__name__", cb), exc)
        self.request_push()
        return commit_hash

    def request_push(self) -> None:
        """With ``push_to``: push the branch in the background and return at once (the training loop never
        waits on the network); ``wait()`` waits for it. Called after each save; a no-op without ``push_to``."""
        if self._pusher is not None:
            self._pusher.request()

    def _apply_retention(self) -> None:
        live = self.history.live()
        best = self.policy.best_checkpoint_hash
        keep = [i for i, h in enumerate(live) if h["commit_hash"] == best]
        kept = select_kept(live, self.policy.retention_rules(), keep)
        drop = [h for h, k in zip(live, kept, strict=True) if not k]
        for h in drop:
            h["pruned"] = True
        prune_commits(self.repository, [h["commit_hash"] for h in drop])

    # ---- loading -----------------------------------------------------------------------------------------
    def load_checkpoint(self, commit_hash: str | None = None, load_best: bool = False) -> dict[str, Any] | None:
        """Return ``{"weights", "state", "commit_hash"}`` for a checkpoint (latest by default), or None if none."""
        self.wait()
        if commit_hash is not None:
            target = self.repository.resolve(commit_hash)
        elif load_best and self.best_checkpoint_hash:
            target = self.best_checkpoint_hash
        else:
            live = self.history.live()
            if not live:
                return None
            target = live[-1]["commit_hash"]
        return load_checkpoint_commit(self.repository, target)

    # ---- callbacks ---------------------------------------------------------------------------------------
    def register_checkpoint_callback(self, callback: Callable[[TrainingState, str | None], None]) -> None:
        if not callable(callback):
            raise InvalidArgumentError("callback", callback, "must be callable(state, commit_hash)")
        self._callbacks.append(callback)

    def unregister_checkpoint_callback(self, callback: Callable[..., None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def list_callbacks(self) -> list[str]:
        return [getattr(cb, "__name__", repr(cb)) for cb in self._callbacks]

    def clear_callbacks(self) -> None:
        self._callbacks.clear()

    # ---- queries -----------------------------------------------------------------------------------------
    def list_checkpoints(self, only_best: bool = False) -> list[dict[str, Any]]:
        """The checkpoints that can still be loaded, oldest first (pruned ones are only in ``checkpoint_history``)."""
        return [dict(h) for h in self.history.live() if (h.get("is_best") or not only_best)]

    def get_checkpoint_info(self, commit_hash: str) -> dict[str, Any] | None:
        found = self.history.find(self.repository.resolve(commit_hash))
        return dict(found) if found is not None else None

    def diff_checkpoints(self, a: str, b: str) -> dict[str, Any]:
        """``{identical, changed, added, removed, similarity, similarity_unavailable}`` between two checkpoints
        (model weights only). ``similarity_unavailable`` says why changed tensors have no similarity (None if all do).
        """
        d = self.repository.diff(a, b)
        changed = list(model_only(dict.fromkeys(d["changed"])))
        added, removed = list(model_only(dict.fromkeys(d["added"]))), list(model_only(dict.fromkeys(d["removed"])))
        similarity = {n: d["stats"][n]["cosine_similarity"] for n in changed if n in d["stats"]}
        why = None
        missing = [n for n in changed if n not in similarity]
        if missing:
            pruned = [c[:12] for c in (d["from"], d["to"]) if self.repository.is_pruned(c)]
            if pruned:
                why = (
                    f"checkpoint {' and '.join(pruned)} was pruned by retention (its weights are deleted; only the "
                    "tensor hashes remain): names and changed/unchanged are known, similarity is not"
                )
            else:
                why = f"{len(missing)} changed tensor(s) changed shape (e.g. {missing[0]!r}): not comparable"
            log.info("diff_checkpoints(%s, %s): %s", a, b, why)
        return {
            "identical": not (changed or added or removed),
            "changed": changed,
            "added": added,
            "removed": removed,
            "similarity": similarity,
            "similarity_unavailable": why,
        }

    # ---- releases ----------------------------------------------------------------------------------------
    def release(
        self, version: str, model_card: str | Mapping[str, Any] | None = None, commit_hash: str | None = None
    ) -> str:
        """Tag a weights-only release ``v{version}`` (semantic version) of a checkpoint (default: best, else latest)."""
        releases.check_version(version)
        self.wait()
        if commit_hash:
            source: str | None = self.repository.resolve(commit_hash)
        else:
            source = self.best_checkpoint_hash or self.last_commit_hash
        if source is None:
            raise RefNotFoundError("no checkpoint to release: save one first")
        return releases.release(self.repository, version, source, self.experiment_name, model_card)

    def list_releases(self) -> list[dict[str, Any]]:
        return releases.list_releases(self.repository)

    def load_release(self, version: str) -> dict[str, WeightTensor]:
        return releases.load_release(self.repository, version)
