"""CoralCallback: a Lightning callback that commits checkpoints to a Coral repository and resumes from them exactly."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Unpack

import torch
from coral.errors import CheckpointError, CoralError, InvalidArgumentError, RefNotFoundError
from coral.plugins import hook
from coral.training import CheckpointManager, PreemptionGuard, TrainingState, capture_random_state
from coral.training.callback_setup import CallbackOptions, CallbackSetup, use_branch
from coral.training.layout import model_only
from coral.version_control.repository import Repository
from coral_torch import PyTorchIntegration

from . import loader_state
from ._compat import LIGHTNING_PACKAGE, LIGHTNING_VERSION, Callback, Checkpoint
from ._state import FORMAT, PER_RANK, plain, rng_for_rank, split_checkpoint
from .io import CoralCheckpointIO, is_coral_path, parse_coral_path

log = logging.getLogger(__name__)

RESERVED_METADATA = frozenset(
    {"coral_checkpoint", "epoch", "global_step", "loss", "metrics", "hparams", "datamodule_hparams", "lightning"}
)


def _fitting(trainer: Any) -> bool:
    fn = trainer.state.fn
    return getattr(fn, "value", fn) == "fit"


def _lookup(obj: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
            continue
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - properties of a trainer that is not fitting can raise anything
            return False, None
    return True, obj


class CoralCallback(Callback, CallbackSetup):
    """Commit Lightning checkpoints (weights, optimizer, schedulers, loops, RNG) to a Coral branch.

    Saves every ``save_every_n_epochs`` epochs, every ``save_every_n_steps`` optimizer steps and whenever the
    logged metric ``save_on_best`` improves (``mode`` "min" or "max"); with none of them set, every epoch.
    Resume exactly with ``trainer.fit(model, ..., ckpt_path="coral://last")``. On a preemption signal (SIGTERM by
    default) it commits at the next batch end, sets ``trainer.should_stop`` and the fit ends with
    ``SystemExit(128 + signum)`` (143 for SIGTERM; Lightning's own SIGTERMException gets that code).
    """

    def __init__(
        self,
        repo: Repository | None = None,
        repo_path: str | os.PathLike[str] | None = None,
        init: bool = False,
        async_save: bool = False,
        **options: Unpack[CallbackOptions],
    ) -> None:
        """``repo`` or ``repo_path``; the options are :class:`coral.training.callback_setup.CallbackOptions`.

        ``async_save=True``: the hook copies the state into reused host buffers and returns; hashing, writing
        and fsyncing run in a background thread (one save in flight; the fit's end waits for the last)."""
        super().__init__()
        if not isinstance(async_save, bool):
            raise InvalidArgumentError("async_save", async_save, "must be True or False")
        self._repo: Repository | None = self.setup_checkpointing(
            repo, repo_path, init, options, repo_may_be_path=False, reserved_metadata=RESERVED_METADATA,
            every_epoch_by_default=True, branch_required=True,
        )
        self._repo_path = str(self._repo.path) if self._repo.path is not None else None
        self.async_save = async_save
        self._config = self.checkpoint_config(async_save=async_save)
        self.preemption = PreemptionGuard.from_config(self._config)
        self._manager: CheckpointManager | None = None
        self.last_commit_hash: str | None = None
        self._resumed_from: str | None = None
        self._pending_rng: Any = None
        self._pending_loaders: Any = None
        self._epoch_start_loaders: dict[str, Any] = {}
        self._fit_started = False
        self._last_step_saved = -1
        self._warned_missing = False

    # ---- repository ---------------------------------------------------------------------------------------
    @property
    def repo(self) -> Repository:
        """The Coral repository the checkpoints go to."""
        if self._repo is None:
            self._repo = Repository(self._repo_path)  # type: ignore[arg-type]
        return self._repo

    @property
    def manager(self) -> CheckpointManager:
        """The CheckpointManager keeping this experiment's history, best checkpoint and retention."""
        if self._manager is None:
            self._manager = CheckpointManager(self.repo, self._config, experiment_name=self.experiment_name)
        return self._manager

    def _history(self) -> CheckpointManager:
        # a fresh read of the persisted history: right on every rank and in every process
        return CheckpointManager(self.repo, self._config, experiment_name=self.experiment_name)

    @property
    def best_commit_hash(self) -> str | None:
        """The best checkpoint by ``save_on_best`` so far, or None."""
        return self._history().best_checkpoint_hash

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles the trainer and its callbacks
        state = dict(self.__dict__)
        state["_manager"] = None
        if self._repo_path is not None:
            state["_repo"] = None
        return state

    def resolve(self, ref: str) -> str:
        """Full hash for ``last`` (latest checkpoint), ``best``, or any branch, tag, hash or ``HEAD~N``."""
        if ref in ("last", "latest"):
            live = [h for h in self._history().checkpoint_history if not h.get("pruned")]
            if not live:
                raise RefNotFoundError(
                    f"no Coral checkpoint yet for experiment {self.experiment_name!r} on branch {self.branch!r}"
                )
            return live[-1]["commit_hash"]
        if ref == "best":
            best = self.best_commit_hash
            if best is None:
                raise RefNotFoundError(
                    f"no best checkpoint for experiment {self.experiment_name!r} (save_on_best={self.save_on_best!r})"
                )
            return best
        return self.repo.resolve(ref)

    def _checkout_branch(self) -> None:
        use_branch(self.repo, self.branch)  # type: ignore[arg-type]

    def _install_io(self, trainer: Any) -> None:
        current = trainer.strategy.checkpoint_io
        if isinstance(current, CoralCheckpointIO) and getattr(current, "_owner", None) is self:
            return
        io = CoralCheckpointIO(self.repo, wrapped=current, resolve=self.resolve)
        io._owner = self  # type: ignore[attr-defined]
        trainer.strategy.checkpoint_io = io

    # ---- Lightning hooks ----------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._install_io(trainer)
        self._allow_fresh_start(trainer)
        self._restore_loaders_before_first_iter(trainer)
        if not any(isinstance(cb, _CoralSaver) and cb.owner is self for cb in trainer.callbacks):
            trainer.callbacks.append(_CoralSaver(self))
        if stage == "fit":
            self._fit_started = False
            self._pending_rng = None
            self._pending_loaders = None
            self._epoch_start_loaders = {}
            self._resumed_from = None
            self._last_step_saved = -1
            if trainer.is_global_zero:
                self._checkout_branch()

    def _allow_fresh_start(self, trainer: Any) -> None:
        """``ckpt_path="coral://last"`` before any checkpoint exists starts fresh with a warning, as Lightning's own
        ``ckpt_path="last"`` does, so one script serves the first run and every resume."""
        connector = getattr(trainer, "_checkpoint_connector", None)
        if connector is None or getattr(connector.resume_start, "_coral_wrapped", False):
            return
        original = connector.resume_start

        def resume_start(checkpoint_path: Any = None, weights_only: Any = None) -> None:
            if is_coral_path(checkpoint_path) and parse_coral_path(str(checkpoint_path)) in ("last", "latest"):
                try:
                    self.resolve("last")
                except RefNotFoundError:
                    log.warning("%s: no Coral checkpoint yet; starting from scratch", checkpoint_path)
                    checkpoint_path = None
            return original(checkpoint_path, weights_only=weights_only)

        resume_start._coral_wrapped = True  # type: ignore[attr-defined]
        connector.resume_start = resume_start

    def _restore_loaders_before_first_iter(self, trainer: Any) -> None:
        """Lightning creates the first epoch's iterator inside ``setup_data`` (drawing the workers' base seed from
        the loader's generator) before any epoch hook: restore the generators right before that, at the point
        where Lightning restores stateful loaders itself."""
        loop = getattr(trainer, "fit_loop", None)
        original = getattr(loop, "_load_combined_loader_states", None)
        if original is None or getattr(original, "_coral_wrapped", False):
            return

        def load_states() -> None:
            self._apply_pending_loaders(trainer)
            return original()

        load_states._coral_wrapped = True  # type: ignore[attr-defined]
        loop._load_combined_loader_states = load_states

    def _apply_pending_loaders(self, trainer: Any) -> None:
        if self._pending_loaders:
            loader_state.restore(trainer, self._pending_loaders)
        self._pending_loaders = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        for key in self.metadata_keys:
            self._attribute(trainer, pl_module, key)
        self._fit_started = True
        self._restore_rng()
        # after Lightning registered its own handlers (it restores what was there before it on teardown)
        self.preemption = PreemptionGuard.from_config(self._config)
        self.preemption.install()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.preemption.uninstall()
        if self._manager is not None and trainer.is_global_zero:
            # fit returns with every save written and every push_to push done (or raised); packing goes on in
            # the background (at exit: a detached process)
            self._manager.wait(packing=False)
            self.last_commit_hash = self._manager.last_commit_hash or self.last_commit_hash  # async: now written
        self.preemption.exit_if_preempted()  # e.g. SIGUSR1: the loop stopped on should_stop

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SystemExit) and not self.preemption.should_stop and _fitting(trainer):
            # the signal came after this batch's Coral hook and Lightning stopped first (its SIGTERMException
            # at the end of the batch): the loops are still at that step boundary, so save it now
            self._on_train_batch_end(trainer, pl_module)
        self.preemption.uninstall()
        if self.preemption.should_stop and isinstance(exception, SystemExit) and not exception.code:
            exception.code = self.preemption.exit_code()  # Lightning's SIGTERMException exits 0 otherwise

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.preemption.uninstall()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("coral")
        if not isinstance(info, Mapping) or not _fitting(trainer):
            return
        if "optimizer_states" not in checkpoint:
            raise CheckpointError(
                f"commit {str(info.get('commit'))[:12]} was saved with include_optimizer=False: it cannot resume "
                "training exactly; load its weights with load_from_coral(model, commit_ref=...) and fit anew"
            )
        self._resumed_from = info.get("commit")
        self._pending_rng = rng_for_rank(info.get("random_state"), trainer.global_rank)
        self._pending_loaders = rng_for_rank(info.get("loaders"), trainer.global_rank)
        if self._fit_started:  # strategies that restore after setup
            self._restore_rng()

    def _restore_rng(self) -> None:
        if self._pending_rng:
            hook().coral_set_rng_state(state=dict(self._pending_rng))
        self._pending_rng = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Put back the loaders' generators if Lightning offered no earlier point, then note their state."""
        self._apply_pending_loaders(trainer)
        self._epoch_start_loaders = loader_state.capture(trainer)

    def _on_train_batch_end(self, trainer: Any, pl_module: Any) -> None:
        n = self.save_every_n_steps
        step = trainer.global_step
        if _fitting(trainer) and self.preemption.check():  # every rank alike (an all-reduce under DDP)
            self._last_step_saved = step
            commit = self._maybe_save(trainer, pl_module, periodic=True, trigger="preemption", epoch_end=False,
                                      preempted=True)
            self.preemption.finish(self.manager.wait if trainer.is_global_zero else lambda: None, commit)
            trainer.should_stop = True
            return
        if not n or step == 0 or step % n or step == self._last_step_saved:
            return
        self._last_step_saved = step
        self._maybe_save(trainer, pl_module, periodic=True, trigger="step", epoch_end=False)

    def _on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.save_on_best is None or trainer.sanity_checking or not _fitting(trainer):
            return
        if getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False):
            return  # validation at the end of the epoch: the epoch-end save decides, with all epoch metrics
        self._maybe_save(trainer, pl_module, periodic=False, trigger="best", epoch_end=False)

    def _on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        n = self.save_every_n_epochs
        periodic = bool(n) and (trainer.current_epoch + 1) % n == 0  # type: ignore[operator]
        self._maybe_save(trainer, pl_module, periodic=periodic, trigger="epoch", epoch_end=True)

    # ---- saving -------------------------------------------------------------------------------------------
    def _metrics(self, trainer: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[str(name)] = float(value)
        return out

    def _state(self, trainer: Any, pl_module: Any, epoch_end: bool) -> TrainingState:
        metrics = self._metrics(trainer)
        lr = None
        if trainer.optimizers and trainer.optimizers[0].param_groups:
            try:
                lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            except (KeyError, TypeError, ValueError):
                lr = None
        max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        return TrainingState(
            epoch=trainer.current_epoch + (1 if epoch_end else 0),
            global_step=trainer.global_step,
            learning_rate=lr,
            loss=metrics.get("loss"),
            metrics=metrics,
            max_epochs=trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None,
            max_steps=max_steps,
            model_name=type(pl_module).__name__,
            experiment_name=self.experiment_name,
        )

    def _attribute(self, trainer: Any, pl_module: Any, key: str) -> Any:
        for obj in (trainer, pl_module):
            found, value = _lookup(obj, key)
            if found:
                return plain(value)
        raise InvalidArgumentError("metadata_keys", key, "is neither a Trainer nor a LightningModule attribute")

    def _rng(self, trainer: Any) -> dict[str, Any]:
        merged = capture_random_state()
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            every: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(every, merged)
            return {PER_RANK: every}
        return merged

    def _gather(self, trainer: Any, value: Any) -> Any:
        """Every rank's value under ``PER_RANK`` in a multi-process run (a collective), else the value itself."""
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            every: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(every, value)
            return {PER_RANK: every}
        return value

    def _maybe_save(
        self, trainer: Any, pl_module: Any, periodic: bool, trigger: str, epoch_end: bool, preempted: bool = False
    ) -> str | None:
        if trainer.sanity_checking or trainer.fast_dev_run or not _fitting(trainer):
            return None
        state = self._state(trainer, pl_module, epoch_end)
        reasons: list[str] = []
        if trainer.is_global_zero:  # rank 0 decides: metrics need not agree across ranks
            if periodic:
                reasons.append(trigger)
            if not preempted and self._is_improvement(state) and "best" not in reasons:
                reasons.append("best")
        reasons = trainer.strategy.broadcast(reasons, src=0)
        if not reasons:
            return None
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # every rank: may be collective
        rng = self._rng(trainer)
        loaders = self._gather(trainer, loader_state.capture(trainer) if epoch_end else self._epoch_start_loaders)
        outcome: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        if trainer.is_global_zero:
            try:
                extra = self.preemption.metadata(state.global_step) if preempted else None
                outcome = (
                    "ok", self._commit(trainer, pl_module, state, checkpoint, rng, "+".join(reasons), loaders, extra)
                )
            except Exception as exc:  # noqa: BLE001 - every rank must leave the broadcast below, then fail together
                outcome, error = ("error", f"{type(exc).__name__}: {exc}"), exc
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if outcome[0] == "error":
            if error is not None:
                raise error
            raise CheckpointError(f"rank 0 failed to commit the Coral checkpoint: {outcome[1]}")
        self.last_commit_hash = outcome[1]
        return self.last_commit_hash

    def _is_improvement(self, state: TrainingState) -> bool:
        if self.save_on_best is None:
            return False
        if self.save_on_best not in state.metrics:
            if not self._warned_missing:
                self._warned_missing = True
                log.warning(
                    "CoralCallback(save_on_best=%r): the metric was not logged (logged: %s)",
                    self.save_on_best, ", ".join(sorted(state.metrics)) or "none",
                )
            return False
        return self.manager.should_save_checkpoint(state)

    def _commit(
        self, trainer: Any, pl_module: Any, state: TrainingState, checkpoint: dict[str, Any], rng: Any, trigger: str,
        loaders: Any = None, extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        self._checkout_branch()
        parts = split_checkpoint(checkpoint, self.include_optimizer)
        state.optimizer_state = parts.optimizer_state
        state.scheduler_state = parts.scheduler_state
        state.random_state = rng
        state.data_state = parts.data_state
        if loaders:
            state.data_state["loaders"] = loaders
        metadata = dict(parts.metadata)
        metadata["lightning"] = {
            "format": FORMAT,
            "package": LIGHTNING_PACKAGE,
            "version": LIGHTNING_VERSION,
            "trigger": trigger,
            "world_size": int(trainer.world_size),
            "include_optimizer": self.include_optimizer,
            "resumed_from": self._resumed_from,
            "branch": self.branch,
        }
        for key in self.metadata_keys:
            metadata[key] = self._attribute(trainer, pl_module, key)
        metadata.update(extra or {})
        self.manager.provenance.add_source(pl_module)  # provenance: the module's hparams, the optimizer's lr...
        self.manager.provenance.add_source(next(iter(getattr(trainer, "optimizers", None) or []), None), "optimizer")
        commit_hash = self.manager.save_checkpoint(
            parts.weights, state, force=True, metadata=metadata, synchronous=extra is not None
        )
        if commit_hash is None:
            if not self._config.async_save:  # pragma: no cover - a sync save always returns its hash
                raise CheckpointError("the checkpoint manager did not return a commit hash")
            # async: the save is being written in the background; the hash lands in the history once it is
            # (last_commit_hash stays the last written one until then; on_fit_end waits for it)
            log.info("Coral checkpoint on %s (%s, epoch %d, step %d): writing in the background", self.branch,
                     trigger, state.epoch, state.global_step)
            return self.manager.last_commit_hash
        log.info("Coral checkpoint %s on %s (%s, epoch %d, step %d)", commit_hash[:12], self.branch, trigger,
                 state.epoch, state.global_step)
        return commit_hash

    # ---- loading ------------------------------------------------------------------------------------------
    def load_from_coral(self, model: torch.nn.Module, commit_ref: str | None = None) -> str:
        """Load a checkpoint's weights into ``model``: ``commit_ref``, else the best checkpoint, else the latest.

        Returns the commit hash loaded. Names must match the model's ``state_dict`` exactly.
        """
        if commit_ref is None:
            target = self.best_commit_hash or self.resolve("last")
        else:
            target = self.resolve(commit_ref)
        weights = model_only(self.repo.get_weights(target))
        PyTorchIntegration.weights_to_model(weights, model, strict=True)
        return target


class _CoralSaver(Checkpoint):
    """Runs CoralCallback's saves after every other callback, like Lightning's own ModelCheckpoint.

    Lightning calls checkpoint callbacks last (after the module's and EarlyStopping's epoch-end hooks), so the
    commit holds their updated state. It is attached in ``setup``, after the Trainer's ``enable_checkpointing``
    check, so ``enable_checkpointing=False`` keeps working.
    """

    def __init__(self, owner: CoralCallback) -> None:
        self.owner = owner

    @property
    def state_key(self) -> str:
        return f"_CoralSaver[{self.owner.experiment_name}]"

    @property
    def best_model_path(self) -> str:
        """What ``ckpt_path="best"`` loads when no ModelCheckpoint is configured: Coral's best checkpoint."""
        try:
            return "coral://" + self.owner.resolve("best")
        except CoralError:
            return ""

    @best_model_path.setter
    def best_model_path(self, value: str) -> None:  # ddp_spawn's launcher copies it back from the workers
        pass

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.owner._on_train_batch_end(trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.owner._on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.owner._on_train_epoch_end(trainer, pl_module)


CoralLightningCallback = CoralCallback
