"""CheckpointManager: decides when to save, commits checkpoints, keeps what the retention rules keep.

Each checkpoint is one commit: the model weights plus optimizer/scheduler/RNG tensors under ``optim/``,
``sched/``, ``rng/`` and ``data/`` in the tree, and the JSON-safe rest of the TrainingState in metadata.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import shutil
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np

from ..core.weight_tensor import WeightTensor
from ..errors import (
    CheckpointError,
    CorruptObjectError,
    InsufficientSpaceError,
    InvalidArgumentError,
    RefExistsError,
    RefNotFoundError,
)
from ..version_control.commit import Commit, commit_key
from ..version_control.repository import Repository, _normalize_weights
from .config import CheckpointConfig
from .iterators import capture_data_state
from .state import TrainingState
from .tensors_in_state import join_state, split_state

log = logging.getLogger(__name__)

STATE_PREFIXES = {"optimizer_state": "optim", "scheduler_state": "sched", "random_state": "rng", "data_state": "data"}
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_RESERVED_METADATA = frozenset({"coral_checkpoint", "epoch", "global_step", "loss", "metrics"})
_live_managers: "weakref.WeakSet[CheckpointManager]" = weakref.WeakSet()


@atexit.register
def _wait_all_at_exit() -> None:
    for manager in list(_live_managers):
        try:
            manager._wait_saves()  # packing: the repository's own bounded wait at exit
        except Exception as exc:  # pragma: no cover - reported, the process is ending anyway
            log.error("a pending Coral checkpoint failed at exit: %s", exc)


class CheckpointManager:
    """Connects a Repository and a CheckpointConfig for one experiment; history survives restarts."""

    def __init__(
        self,
        repository: Repository,
        config: CheckpointConfig | None = None,
        model_name: str | None = None,
        experiment_name: str | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise InvalidArgumentError("repository", type(repository).__name__, "expected a coral Repository")
        self.repository = repository
        self.config = config if config is not None else CheckpointConfig()
        if not isinstance(self.config, CheckpointConfig):
            raise InvalidArgumentError("config", type(config).__name__, "expected a CheckpointConfig")
        self.model_name = model_name
        self.experiment_name = experiment_name or datetime.now().strftime("experiment_%Y%m%d_%H%M%S")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", self.experiment_name):
            raise InvalidArgumentError("experiment_name", self.experiment_name, "use letters, digits, '.', '_' and '-'")
        self._callbacks: list[Callable[[TrainingState, str | None], None]] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._save_costs: list[float] = []
        self._step_times: list[tuple[int, float]] = []
        self._last_saved_step = 0
        self._last_saved_at: tuple[int, int] | None = None
        self._load_history()
        _live_managers.add(self)

    # ---- persisted history -------------------------------------------------------------------------------
    @property
    def _doc_name(self) -> str:
        return f"checkpoints/{self.experiment_name}"

    def _load_history(self) -> None:
        doc = self.repository.read_document(self._doc_name) or {}
        try:  # the document may come from someone else's repository: check its shape, name what is wrong
            if not isinstance(doc, dict):
                raise TypeError(f"expected an object, found {type(doc).__name__}")
            history = doc.get("history", [])
            if not isinstance(history, list) or not all(
                isinstance(h, dict) and isinstance(h.get("commit_hash"), str) for h in history
            ):
                raise TypeError("history is not a list of checkpoint records")
            self.checkpoint_history: list[dict[str, Any]] = list(history)
            self.best_metric_value: float | None = _opt_float(doc.get("best_metric_value"))
            best = doc.get("best_checkpoint_hash")
            if best is not None and not isinstance(best, str):
                raise TypeError("best_checkpoint_hash is not a string")
            self.best_checkpoint_hash: str | None = best
            self.no_improvement_count: int = int(doc.get("no_improvement_count", 0))
            self._early_best: float | None = _opt_float(doc.get("early_best"))
            last = self.checkpoint_history[-1] if self.checkpoint_history else {}
            self._last_saved_at = (last.get("epoch"), last.get("global_step")) if last else None
        except (TypeError, ValueError, OverflowError) as exc:
            raise CorruptObjectError(f"ref meta/{self._doc_name}", f"checkpoint history is malformed: {exc}") from None

    def _persist(self) -> None:
        doc = {
            "experiment_name": self.experiment_name,
            "model_name": self.model_name,
            "history": self.checkpoint_history,
            "best_metric_value": self.best_metric_value,
            "best_checkpoint_hash": self.best_checkpoint_hash,
            "no_improvement_count": self.no_improvement_count,
            "early_best": self._early_best,
        }
        self.repository.update_document(self._doc_name, lambda _old: doc)

    # ---- policy ------------------------------------------------------------------------------------------
    def _metric(self, state: TrainingState) -> float | None:
        name = self.config.save_on_best_metric
        if name is None:
            return None
        value = state.metrics.get(name)
        if value is None and name == "loss":
            value = state.loss
        if value is None:
            return None
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgumentError(f"metrics[{name!r}]", value, "must be a number") from None
        return f if not math.isnan(f) else None

    def _better(self, value: float, than: float | None, margin: float = 0.0) -> bool:
        if than is None:
            return True
        return value < than - margin if self.config.minimize_metric else value > than + margin

    def _auto_interval(self) -> int | None:
        if not self._save_costs or len(self._step_times) < 2:
            return None
        (s0, t0), (s1, t1) = self._step_times[0], self._step_times[-1]
        if s1 <= s0:
            return None
        step_time = max((t1 - t0) / (s1 - s0), 1e-9)
        cost = float(np.median(self._save_costs))
        interval_seconds = math.sqrt(2.0 * cost * float(self.config.mean_time_between_failures or 0))
        return max(1, int(round(interval_seconds / step_time)))

    @property
    def auto_save_interval(self) -> int | None:
        """The Young-Daly interval in steps chosen so far (``save_every_n_steps="auto"``), or None."""
        return self._auto_interval()

    def should_save_checkpoint(self, state: TrainingState) -> bool:
        """True when any condition holds: every N steps, every N epochs, or the watched metric improved."""
        if not isinstance(state, TrainingState):
            raise InvalidArgumentError("state", type(state).__name__, "expected a TrainingState")
        cfg = self.config
        # the step and epoch rules never save a second copy of the state just saved (a step save, then epoch
        # end at the same step); only a better metric can
        fresh = (state.epoch, state.global_step) != self._last_saved_at
        if fresh and self._step_rule_due(state):
            return True
        if fresh and cfg.save_every_n_epochs and state.epoch % cfg.save_every_n_epochs == 0:
            return True
        value = self._metric(state)
        if value is not None and self._better(value, self.best_metric_value):
            return True
        return False

    def _step_rule_due(self, state: TrainingState) -> bool:
        cfg = self.config
        if cfg.save_every_n_steps == "auto":
            if not self._step_times or self._step_times[-1][0] != state.global_step:
                self._step_times.append((state.global_step, time.perf_counter()))
                self._step_times = self._step_times[-1000:]
            interval = self._auto_interval()
            if interval is None:  # measure the cost of one save first
                return not self._save_costs and state.global_step > 0 and len(self._step_times) >= 2
            return state.global_step - self._last_saved_step >= interval
        n = cfg.save_every_n_steps
        return bool(n) and state.global_step > 0 and state.global_step % n == 0

    @property
    def should_stop_early(self) -> bool:
        p = self.config.early_stopping_patience
        return p is not None and self.no_improvement_count >= p

    def _update_early_stopping(self, state: TrainingState) -> None:
        if self.config.early_stopping_patience is None:
            return
        value = self._metric(state)
        if value is None:
            return
        if self._better(value, self._early_best, self.config.early_stopping_threshold):
            self._early_best = value
            self.no_improvement_count = 0
        else:
            self.no_improvement_count += 1

    # ---- saving ------------------------------------------------------------------------------------------
    def save_checkpoint(
        self, weights: Mapping[str, Any], state: TrainingState, force: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Save a checkpoint when the policy says so (or ``force``); returns the commit hash or None.

        ``metadata`` adds JSON-safe keys to the commit metadata (e.g. a framework's run arguments); the keys
        the manager writes itself (``coral_checkpoint``, ``epoch``, ``global_step``, ``loss``, ``metrics``) are reserved.

        With ``async_save`` the hash is returned at once (the commit is computed from the content) and the
        write finishes in the background; call ``wait()`` to be sure it is on disk.
        """
        if not isinstance(state, TrainingState):
            raise InvalidArgumentError("state", type(state).__name__, "expected a TrainingState")
        # one save in flight at a time: the previous one finishes (and reports its error) first; background
        # packing of earlier checkpoints is not waited for
        self._wait_saves()
        extra = dict(metadata or {})
        clash = sorted(set(extra) & _RESERVED_METADATA)
        if clash:
            raise InvalidArgumentError("metadata", clash[0], f"is reserved (reserved keys: {', '.join(sorted(_RESERVED_METADATA))})")
        with self._lock:
            should = force or self.should_save_checkpoint(state)
            self._update_early_stopping(state)
            if not should:
                self._persist_if_counting()
                return None
            value = self._metric(state)
            is_best = value is not None and self._better(value, self.best_metric_value)
            named = _normalize_weights(weights)
            for name in named:
                if name.split("/", 1)[0] in STATE_PREFIXES.values():
                    raise InvalidArgumentError("weights", name, f"names starting with {name.split('/')[0]}/ are reserved")
            arrays, skeletons = self._capture_state(state)
            self._check_free_space(named, arrays)
            if self.config.async_save:
                # snapshot to host memory: the only stall the training thread feels
                named = {n: WeightTensor(np.array(w.data, copy=True), w.metadata) for n, w in named.items()}
                arrays = {n: np.array(a, copy=True) for n, a in arrays.items()}
                self._thread = threading.Thread(
                    target=self._background, args=(named, arrays, skeletons, state, value, is_best, extra), daemon=False,
                    name=f"coral-save-{self.experiment_name}",
                )
                self._thread.start()
                return None  # the hash lands in checkpoint_history once written; see wait()
            return self._write(named, arrays, skeletons, state, value, is_best, extra)

    def _persist_if_counting(self) -> None:
        if self.config.early_stopping_patience is not None:
            self._persist()

    def _background(self, *args: Any) -> None:
        try:
            self._write(*args)
        except BaseException as exc:  # surfaced at the next save or wait()
            log.error("async checkpoint failed: %s", exc)
            self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"an earlier async checkpoint failed: {err}") from err

    def wait(self) -> None:
        """Block until pending async saves are written and the repository's background packing is done;
        raise if a save failed."""
        self._wait_saves()
        self.repository.wait()

    def _wait_saves(self) -> None:
        """Block until pending async saves are written; raise if one failed."""
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
            self._thread = None
        self._raise_pending()

    @property
    def last_commit_hash(self) -> str | None:
        return self.checkpoint_history[-1]["commit_hash"] if self.checkpoint_history else None

    def _capture_state(self, state: TrainingState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from ..plugins import hook

        cfg = self.config
        include = {
            "optimizer_state": cfg.save_optimizer_state,
            "scheduler_state": cfg.save_scheduler_state,
            "random_state": cfg.save_random_state,
            "data_state": True,
        }
        arrays: dict[str, np.ndarray] = {}
        skeletons: dict[str, Any] = {}
        for fname, prefix in STATE_PREFIXES.items():
            if not include[fname]:
                continue
            value = getattr(state, fname)
            if fname == "random_state" and value is None:
                merged: dict[str, Any] = {}
                for part in hook().coral_get_rng_state():
                    if part:
                        merged.update(part)
                value = merged or None
            if fname == "data_state":
                value = capture_data_state(value)
            if value is None:
                continue
            skeletons[fname] = split_state(value, prefix, arrays)
        return arrays, skeletons

    def _check_free_space(self, named: Mapping[str, WeightTensor], arrays: Mapping[str, np.ndarray]) -> None:
        need = self.config.min_free_space
        if need is None or self.repository.path is None:
            return
        size = sum(w.nbytes for w in named.values()) + sum(a.nbytes for a in arrays.values())
        free = shutil.disk_usage(self.repository.path).free
        if free - size < need:
            raise InsufficientSpaceError(
                f"min_free_space={need}: saving ~{size} bytes would leave {free - size} bytes free on "
                f"{self.repository.path}; nothing was written"
            )

    def _message(self, state: TrainingState) -> str:
        fields = state.copy_without_state()
        fields.update({"step": state.global_step, "experiment": self.experiment_name})
        fields.update(state.metrics)
        try:
            return self.config.commit_message_template.format(**fields)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            return f"Checkpoint at epoch {state.epoch}, step {state.global_step} (template error: {exc})"

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
        repo = self.repository
        started = time.perf_counter()
        all_weights: dict[str, Any] = dict(named)
        all_weights.update(arrays)
        if not self.config.auto_commit:
            repo.stage_weights(all_weights)
            return None
        info = state.copy_without_state()
        info["model_name"] = info.get("model_name") or self.model_name
        info["experiment_name"] = self.experiment_name
        metadata = {
            "coral_checkpoint": {
                "experiment": self.experiment_name,
                "model_name": self.model_name,
                "is_best": is_best,
                "weights": sorted(named),
                "training_state": info,
                "state_skeletons": skeletons,
            },
            "epoch": state.epoch,
            "global_step": state.global_step,
            "loss": state.loss,
            "metrics": dict(state.metrics),
        }
        metadata.update(extra or {})
        # chunks and commit under one writers' lock: a gc in another process cannot interleave
        # packing the previous checkpoint against this one runs in the repository's background packer
        commit_hash = repo.commit_weights(
            all_weights, self._message(state), metadata, pack=self.config.use_incremental_saves
        )
        with self._lock:
            if is_best:
                self.best_metric_value = value
                self.best_checkpoint_hash = commit_hash
                if self.config.tag_best_checkpoints:
                    repo.move_tag(f"best-{self.experiment_name}", commit_hash, f"best {self.config.save_on_best_metric}={value}")
            self.checkpoint_history.append(
                {
                    "commit_hash": commit_hash,
                    "epoch": state.epoch,
                    "global_step": state.global_step,
                    "timestamp": datetime.now(timezone.utc).isoformat(),
                    "metrics": dict(state.metrics) | ({"loss": state.loss} if state.loss is not None else {}),
                    "metric_value": value,
                    "is_best": is_best,
                    "pruned": False,
                }
            )
            self._last_saved_step = state.global_step
            self._last_saved_at = (state.epoch, state.global_step)
            self._apply_retention()
            self._persist()
        self._save_costs.append(time.perf_counter() - started)
        for cb in list(self._callbacks):
            try:
                cb(state, commit_hash)
            except Exception as exc:
                log.error("checkpoint callback %s failed: %s", getattr(cb, "__name__", cb), exc)
        return commit_hash

    # ---- retention ---------------------------------------------------------------------------------------
    def _apply_retention(self) -> None:
        cfg = self.config
        live = [h for h in self.checkpoint_history if not h.get("pruned")]
        if not live or (
            cfg.keep_last_n_checkpoints is None
            and cfg.keep_best_n_checkpoints is None
            and cfg.keep_checkpoint_every_n_epochs is None
        ):
            return
        keep: set[str] = set()
        if cfg.keep_last_n_checkpoints:
            keep.update(h["commit_hash"] for h in live[-cfg.keep_last_n_checkpoints :])
        if cfg.keep_best_n_checkpoints:
            ranked = [h for h in live if h.get("metric_value") is not None]
            ranked.sort(key=lambda h: h["metric_value"], reverse=not cfg.minimize_metric)
            keep.update(h["commit_hash"] for h in ranked[: cfg.keep_best_n_checkpoints])
        if cfg.keep_checkpoint_every_n_epochs:
            keep.update(h["commit_hash"] for h in live if h["epoch"] % cfg.keep_checkpoint_every_n_epochs == 0)
        if self.best_checkpoint_hash:
            keep.add(self.best_checkpoint_hash)
        keep.add(live[-1]["commit_hash"])  # the newest is the resume point
        pruned_any = False
        for h in live:
            if h["commit_hash"] not in keep:
                self.repository.prune(h["commit_hash"])
                h["pruned"] = True
                pruned_any = True
        if pruned_any:
            self.repository.gc()

    # ---- loading -----------------------------------------------------------------------------------------
    def load_checkpoint(self, commit_hash: str | None = None, load_best: bool = False) -> dict[str, Any] | None:
        """Return ``{"weights", "state", "commit_hash"}`` for a checkpoint (latest by default), or None if none."""
        self.wait()
        if commit_hash is not None:
            target = self.repository.resolve(commit_hash)
        elif load_best and self.best_checkpoint_hash:
            target = self.best_checkpoint_hash
        else:
            live = [h for h in self.checkpoint_history if not h.get("pruned")]
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
        return [dict(h) for h in self.checkpoint_history if (h.get("is_best") or not only_best)]

    def get_checkpoint_info(self, commit_hash: str) -> dict[str, Any] | None:
        full = self.repository.resolve(commit_hash)
        for h in self.checkpoint_history:
            if h["commit_hash"] == full:
                return dict(h)
        return None

    def diff_checkpoints(self, a: str, b: str) -> dict[str, Any]:
        """``{identical, changed, added, removed, similarity}`` between two checkpoints (model weights only)."""
        d = self.repository.diff(a, b)
        keep = lambda names: [n for n in names if n.split("/", 1)[0] not in STATE_PREFIXES.values()]  # noqa: E731
        changed = keep(d["changed"])
        return {
            "identical": not (changed or keep(d["added"]) or keep(d["removed"])),
            "changed": changed,
            "added": keep(d["added"]),
            "removed": keep(d["removed"]),
            "similarity": {n: d["stats"][n]["cosine_similarity"] for n in changed if n in d["stats"]},
        }

    # ---- releases ----------------------------------------------------------------------------------------
    def release(self, version: str, model_card: str | Mapping[str, Any] | None = None, commit_hash: str | None = None) -> str:
        """Tag a weights-only release ``v{version}`` (semantic version) of a checkpoint (default: best, else latest)."""
        if not isinstance(version, str) or not _SEMVER.fullmatch(version.removeprefix("v")):
            raise InvalidArgumentError("version", version, "must be a semantic version such as 1.2.0")
        version = version.removeprefix("v")
        name = f"v{version}"
        if self.repository.store.get_ref(f"tags/{name}") is not None:
            raise RefExistsError(f"release {name} already exists")
        self.wait()
        source = self.repository.resolve(commit_hash) if commit_hash else (self.best_checkpoint_hash or self.last_commit_hash)
        if source is None:
            raise RefNotFoundError("no checkpoint to release: save one first")
        commit = self.repository._read_commit(source)
        tree = {n: e for n, e in commit.tree.items() if n.split("/", 1)[0] not in STATE_PREFIXES.values()}
        meta = {"release": {"version": version, "source": source, "experiment": self.experiment_name},
                "metrics": commit.metadata.get("metrics", {})}
        rel = Commit([source], f"Release {name}", meta, tree)
        self.repository.store.put(commit_key(rel.id), rel.to_bytes())
        self.repository.tag_version(name, f"release {version}", rel.id, model_card, metadata={"release": True, "version": version})
        return rel.id

    def list_releases(self) -> list[dict[str, Any]]:
        rel = [t for t in self.repository.list_tags() if (t.get("metadata") or {}).get("release")]
        return sorted(rel, key=lambda t: [int(x) if x.isdigit() else x for x in re.split(r"[.\-+]", t["metadata"]["version"])])

    def load_release(self, version: str) -> dict[str, WeightTensor]:
        return self.repository.get_weights(f"v{version.removeprefix('v')}")


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def load_checkpoint_commit(repository: Repository, commit_hash: str) -> dict[str, Any]:
    """Rebuild ``{"weights", "state", "commit_hash"}`` from a checkpoint commit (any experiment)."""
    commit = repository.get_commit(commit_hash)
    all_weights = repository.get_weights(commit_hash)
    meta = commit.metadata.get("coral_checkpoint") or {}
    prefixes = set(STATE_PREFIXES.values())
    weights = {n: w for n, w in all_weights.items() if n.split("/", 1)[0] not in prefixes}
    state_arrays = {n: w.data for n, w in all_weights.items() if n.split("/", 1)[0] in prefixes}
    info = dict(meta.get("training_state") or {"epoch": commit.metadata.get("epoch", 0), "global_step": commit.metadata.get("global_step", 0)})
    for fname, skeleton in (meta.get("state_skeletons") or {}).items():
        if fname in STATE_PREFIXES:
            info[fname] = join_state(skeleton, state_arrays)
    known = set(TrainingState.__dataclass_fields__)
    state = TrainingState(**{k: v for k, v in info.items() if k in known})
    return {"weights": weights, "state": state, "commit_hash": repository.resolve(commit_hash)}


def restore_random_state(random_state: Mapping[str, Any] | None) -> None:
    """Restore every generator captured in a checkpoint's ``state.random_state`` (python, numpy, and whatever the
    installed plugins own: torch, CUDA, tracked JAX keys). Call it right before training continues."""
    if not random_state:
        return
    from ..plugins import hook

    hook().coral_set_rng_state(state=dict(random_state))
