"""CoralTrainer: wrap a hand-written PyTorch loop with step/epoch checkpointing, callbacks and resume."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from coral import Repository
from coral.errors import InvalidArgumentError
from coral.integrations.trackers import Tracker
from coral.training import CheckpointConfig, CheckpointManager, PreemptionGuard, TrainingState

from . import _state
from . import distributed as _dist

log = logging.getLogger(__name__)

EVENTS = ("epoch_end", "step_end", "checkpoint_save")


class CoralTrainer:
    """Checkpoints a training loop you write yourself: call ``step()`` per batch and ``epoch_end(epoch)`` per epoch.

    ``epoch_end`` steps the scheduler (when set) and then saves when the CheckpointConfig says so (with no
    config: every epoch), so the saved scheduler state is the one the next epoch starts from. Checkpoints hold
    the model's full ``state_dict``, the optimizer and scheduler states, every RNG and the data order (``set_data``).
    After a preemption signal, ``step()`` saves at that step and ``should_stop`` turns True; ``close()`` then
    raises ``SystemExit(128 + signum)``.
    In a process group (DDP), call it on every rank: global rank 0 commits, the others wait at a barrier
    and get the same hash.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        repository: Repository | str | os.PathLike[str],
        experiment_name: str | None = None,
        checkpoint_config: CheckpointConfig | None = None,
        *,
        tracker: Tracker | None = None,
    ) -> None:
        self.model = _state.check_model(model)
        self.repository = _state.open_repository(repository)
        # the default saves at every epoch end, like Checkpointer and the framework callbacks
        if checkpoint_config is None:
            checkpoint_config = CheckpointConfig(save_every_n_epochs=1)
        self.config = checkpoint_config
        self.manager = CheckpointManager(self.repository, self.config, type(model).__name__, experiment_name)
        self.experiment_name = self.manager.experiment_name
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.data: Any = None
        self.tracker = tracker
        self.current_epoch = 0
        self.global_step = 0
        self.training_metrics: dict[str, Any] = {}
        self._epoch_complete = False
        self._callbacks: dict[str, list[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._tracking = False
        self._stop_early: bool | None = None
        self.manager.register_checkpoint_callback(self._saved)
        self.preemption = PreemptionGuard.from_config(self.config)
        self.preemption.install()

    # ---- setup -------------------------------------------------------------------------------------------
    def set_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the optimizer whose state every checkpoint saves and ``load_checkpoint`` restores."""
        self.optimizer = _state.check_optimizer(optimizer)

    def set_scheduler(self, scheduler: Any) -> None:
        """Register the LR scheduler: saved with checkpoints and stepped by ``epoch_end``."""
        self.scheduler = _state.check_scheduler(scheduler)

    def set_data(self, source: Any) -> None:
        """Register the data order to checkpoint: a DataLoader built with ``generator=``, a ResumableLoader,
        a ``torch.Generator`` or any object with ``get_state``/``set_state``."""
        self.data = source

    def add_callback(self, event: str, fn: Callable[..., Any]) -> None:
        """``epoch_end``/``step_end``: ``fn(trainer)``; ``checkpoint_save``: ``fn(trainer, commit_hash)``.

        ``checkpoint_save`` callbacks run after the commit is durable; an exception there is logged, not
        raised, so a failing notification never stops training.
        """
        if event not in EVENTS:
            raise InvalidArgumentError("event", event, f"must be one of {', '.join(EVENTS)}")
        if not callable(fn):
            raise InvalidArgumentError("fn", fn, "must be callable")
        self._callbacks[event].append(fn)

    # ---- training loop -----------------------------------------------------------------------------------
    def step(self, loss: Any = None, **metrics: Any) -> str | None:
        """Count one training step, record metrics, run ``step_end`` callbacks, save on the step rule.

        Returns the commit hash when this step saved a checkpoint.
        """
        self.global_step += 1
        if loss is not None:
            self.training_metrics["loss"] = _state.number("loss", loss)
        self.training_metrics.update({k: _state.number(k, v) for k, v in metrics.items()})
        self._log_metrics({"loss": loss, **metrics} if loss is not None else metrics)
        self._fire("step_end", self)
        epoch = self.current_epoch + 1 if self._epoch_complete else self.current_epoch
        if self.preemption.check():  # every rank alike (an all-reduce): outside the save point
            return self._save_preempted(epoch)
        every = self.config.save_every_n_steps
        if not every:
            return None
        if every != "auto" and self.global_step % every:
            return None  # the same answer on every rank: no save point

        def on_rank0() -> str | None:
            with _state.policy_view(self.manager, steps=True, epochs=False):
                if every == "auto":
                    probe = self._state(epoch, epoch_complete=False, with_tensors=False)
                    if not self.manager.should_save_checkpoint(probe):
                        return None
                return self._save(epoch, epoch_complete=False, force=True)

        return _dist.run_on_rank0(on_rank0, "step")

    def update_metrics(self, **metrics: Any) -> None:
        """Record metrics (e.g. validation results) for the next save and the callbacks."""
        self.training_metrics.update({k: _state.number(k, v) for k, v in metrics.items()})
        self._log_metrics(metrics)

    def epoch_end(self, epoch: int) -> str | None:
        """End epoch ``epoch``: run callbacks, step the scheduler, save on the epoch/metric rules.

        Returns the commit hash when a checkpoint was saved.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidArgumentError("epoch", epoch, "must be a non-negative integer")
        self.current_epoch = epoch
        self._epoch_complete = True
        self._fire("epoch_end", self)
        if self.scheduler is not None:
            self._step_scheduler()

        def on_rank0() -> str | None:
            with _state.policy_view(self.manager, steps=False, epochs=True):
                probe = self._state(epoch, epoch_complete=True, with_tensors=False)
                if not self.manager.should_save_checkpoint(probe):
                    self.manager.save_checkpoint({}, probe)  # keeps early-stopping counts; saves nothing
                    return None
                return self._save(epoch, epoch_complete=True, force=False)

        commit = _dist.run_on_rank0(on_rank0, "epoch_end")
        if _dist.is_distributed():  # rank 0's early-stopping verdict: every rank stops at the same epoch
            self._stop_early = _dist.broadcast(self.manager.should_stop_early)
        return commit

    def _step_scheduler(self) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            name = self.config.save_on_best_metric or ("val_loss" if "val_loss" in self.training_metrics else "loss")
            value = self.training_metrics.get(name)
            if value is None:
                raise InvalidArgumentError(
                    "scheduler",
                    "ReduceLROnPlateau",
                    f"needs the metric {name!r}: pass it to step() or update_metrics()",
                )
            self.scheduler.step(value)
        else:
            self.scheduler.step()

    @property
    def should_stop_early(self) -> bool:
        """True once ``early_stopping_patience`` epochs passed without the watched metric improving."""
        return self.manager.should_stop_early if self._stop_early is None else self._stop_early

    @property
    def start_epoch(self) -> int:
        """The epoch a loop should run next: 0 on a fresh run, one past a completed (or loaded) epoch."""
        return self.current_epoch + 1 if self._epoch_complete else self.current_epoch

    # ---- checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self, force: bool = False) -> str | None:
        """Save now if the full policy says so, or always with ``force=True``; returns the commit hash or None."""
        epoch = self.current_epoch

        def on_rank0() -> str | None:
            if force:
                return self._save(epoch, epoch_complete=self._epoch_complete, force=True)
            probe = self._state(epoch, epoch_complete=self._epoch_complete, with_tensors=False)
            if not self.manager.should_save_checkpoint(probe):
                return None
            return self._save(epoch, epoch_complete=self._epoch_complete, force=True)

        return _dist.run_on_rank0(on_rank0, "save_checkpoint")

    def load_checkpoint(
        self,
        commit_hash: str | None = None,
        load_best: bool = False,
        load_optimizer: bool = True,
        load_scheduler: bool = True,
        *,
        strict: bool = True,
    ) -> str | None:
        """Restore the latest (or given, or best) checkpoint into the model, optimizer, scheduler, RNGs and data.

        Returns the loaded commit hash, or None when this experiment has no checkpoint yet.
        """
        def pick() -> str | None:
            if commit_hash is not None:
                return self.repository.resolve(commit_hash)
            if load_best and self.manager.best_checkpoint_hash:
                return self.manager.best_checkpoint_hash
            live = [h for h in self.manager.list_checkpoints() if not h.get("pruned")]
            return str(live[-1]["commit_hash"]) if live else None

        target = _dist.run_on_rank0(pick, "load_checkpoint")  # every rank loads the same commit
        ckpt = self.manager.load_checkpoint(commit_hash=target) if target is not None else None
        if ckpt is None:
            log.info("experiment %r has no checkpoint to load", self.experiment_name)
            return None
        complete = _state.restore(
            ckpt, self.model, optimizer=self.optimizer, scheduler=self.scheduler, data=self.data,
            load_optimizer=load_optimizer, load_scheduler=load_scheduler, strict=strict,
        )
        state: TrainingState = ckpt["state"]
        self.current_epoch = state.epoch
        self.global_step = state.global_step
        self._epoch_complete = complete
        self.training_metrics = dict(state.metrics)
        if state.loss is not None:
            self.training_metrics["loss"] = state.loss
        return str(ckpt["commit_hash"])

    def list_checkpoints(self, only_best: bool = False) -> list[dict[str, Any]]:
        """This experiment's loadable checkpoints, oldest first: commit_hash, epoch, global_step, metrics, is_best
        (pruned ones stay in ``manager.checkpoint_history``, marked)."""
        return self.manager.list_checkpoints(only_best=only_best)

    def get_training_summary(self) -> dict[str, Any]:
        """Where training stands: epoch, step, checkpoints, the best one, the latest metrics."""
        history = self.manager.checkpoint_history
        return {
            "experiment_name": self.experiment_name,
            "model_name": self.manager.model_name,
            "current_epoch": self.current_epoch,
            "global_step": self.global_step,
            "learning_rate": _state.learning_rate(self.optimizer),
            "total_checkpoints": len(history),
            "live_checkpoints": sum(1 for h in history if not h.get("pruned")),
            "latest_checkpoint": self.manager.last_commit_hash,
            "best_metric": self.config.save_on_best_metric,
            "best_metric_value": self.manager.best_metric_value,
            "best_checkpoint": self.manager.best_checkpoint_hash,
            "metrics": dict(self.training_metrics),
        }

    def wait(self) -> None:
        """Block until async saves are on disk (``CheckpointConfig(async_save=True)``)."""
        self.manager.wait()

    def close(self, status: str = "completed") -> None:
        """Wait for pending saves and end the tracker run (``"completed"`` or ``"failed"``); after a preemption,
        put the signal handlers back and raise ``SystemExit(128 + signum)``."""
        preempted = self.preemption.should_stop
        try:
            self.manager.wait(packing=False)  # packing goes on in the background (at exit: a detached process)
        except BaseException:
            status = "failed"
            raise
        finally:
            self.preemption.uninstall()
            if self.tracker is not None:
                self.tracker.end_run("killed" if preempted and status == "completed" else status)
        self.preemption.exit_if_preempted()

    @property
    def should_stop(self) -> bool:
        """True once a preemption signal arrived and its checkpoint is saved: end the training loop now."""
        return self.preemption.should_stop

    # ---- internals ---------------------------------------------------------------------------------------
    def _state(self, epoch: int, *, epoch_complete: bool, with_tensors: bool) -> TrainingState:
        return _state.build_state(
            self.manager, epoch=epoch, global_step=self.global_step, metrics=self.training_metrics,
            optimizer=self.optimizer, scheduler=self.scheduler, data=self.data,
            epoch_complete=epoch_complete, with_tensors=with_tensors,
        )

    def _save_preempted(self, epoch: int) -> str | None:
        """The preemption checkpoint at this very step: rank 0 commits and waits (deadline-bounded) for it and
        its push inside the save point, so every rank gets the hash and stops together."""

        def on_rank0() -> str | None:
            state = self._state(epoch, epoch_complete=False, with_tensors=True)
            saved = self.manager.save_checkpoint(
                _state.model_weights(self.model, self.manager), state, force=True,
                metadata=self.preemption.metadata(self.global_step), synchronous=True,
            )
            self.preemption.finish(self.manager.wait, saved)
            return saved

        commit = _dist.run_on_rank0(on_rank0, "preemption")
        if not self.preemption.should_stop:  # the other ranks: rank 0 has saved (and pushed) already
            self.preemption.finish(lambda: None, commit)
        return commit

    def _save(self, epoch: int, *, epoch_complete: bool, force: bool) -> str | None:
        state = self._state(epoch, epoch_complete=epoch_complete, with_tensors=True)
        return self.manager.save_checkpoint(_state.model_weights(self.model, self.manager), state, force=force)

    def _saved(self, state: TrainingState, commit_hash: str | None) -> None:
        if commit_hash is None:
            return
        if self.tracker is not None:
            _state.guarded(
                self.tracker.log_checkpoint, commit_hash, step=state.global_step, metadata={"epoch": state.epoch}
            )
        for fn in list(self._callbacks["checkpoint_save"]):
            _state.guarded(fn, self, commit_hash)

    def _fire(self, event: str, *args: Any) -> None:
        for fn in list(self._callbacks[event]):
            fn(*args)

    def _log_metrics(self, metrics: dict[str, Any]) -> None:
        if self.tracker is None:
            return
        numeric = {k: v for k, v in ((k, _state.number(k, v)) for k, v in metrics.items()) if _state.finite(v)}
        if numeric:
            self.tracker.log_metrics(numeric, step=self.global_step)
