"""Checkpointer: a few keyword arguments for the checkpoint policy, resume in one flag, a context manager."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import torch
from coral import Repository
from coral.errors import InvalidArgumentError
from coral.integrations.trackers import Tracker
from coral.training import CheckpointConfig, CheckpointManager, PreemptionGuard, TrainingState

from . import _state
from . import distributed as _dist
from .data import is_mid_epoch
from .integration import PyTorchIntegration
from .lazy_snapshot import SNAPSHOTS, VersionGuard, lazy_weights, track_optimizer

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and resume a PyTorch run: ``log(epoch, step, **metrics)`` saves when the policy says so.

    ``resume=True`` (latest) or ``"best"`` restores the model, optimizer, scheduler, every RNG and the data
    order (``data=``) from this experiment's checkpoint at construction; ``epoch`` is then the epoch to run
    next, so ``for epoch in range(ckpt.epoch, N)`` neither repeats nor skips one. With no save rule given,
    it saves every epoch. ``hparams`` (a JSON-like dict) is recorded in every checkpoint's provenance, next
    to the optimizer's lr, betas and weight decay. As a context manager it starts and ends the tracker run
    (``"completed"``, or ``"failed"`` when an exception escapes).

    Preemption (``save_on_preemption``, on by default): after SIGTERM, the next ``log()`` saves at its step
    and ``should_stop`` turns True; break out of the loop and leaving the ``with`` block (or
    ``exit_if_preempted()``) raises ``SystemExit(143)``.

    In a process group, build it and call ``log``/``save`` on every rank: global rank 0 commits, the others
    wait at a barrier (``barrier_timeout`` seconds) and return the same hash. ``distributed="dcp"`` saves
    sharded models (FSDP2) through ``torch.distributed.checkpoint``: every rank writes its own shards into
    one commit. ``push_to`` names a remote (``coral remote add``) each checkpoint is pushed to in the background;
    ``close`` waits for the pushes.

    ``async_save=True``: ``log``/``save`` return at once and the checkpoint is written in the background.
    ``snapshot="lazy"`` (the default; needs ``optimizer``) copies the state in the background too, while the
    next forward/backward runs; the optimizer's ``step()`` waits for the copy only if it is not finished. A
    tensor written in place outside ``step()`` meanwhile fails that save (never a mixed commit). Code that
    changes parameters outside ``step()`` (EMA into the model, manual writes, ``.data``) passes
    ``snapshot="copy"``: the copy is made inside ``save``. See docs/async_snapshots.md.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        repo_or_path: Repository | str | os.PathLike[str],
        experiment: str,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        every_n_epochs: int | None = None,
        every_n_steps: int | str | None = None,
        on_best: str | None = None,
        minimize: bool = True,
        keep_last: int | None = None,
        keep_best: int | None = None,
        resume: bool | str = False,
        tracker: Tracker | None = None,
        data: Any = None,
        config: CheckpointConfig | None = None,
        distributed: str | None = None,
        barrier_timeout: float | None = None,
        hparams: Mapping[str, Any] | None = None,
        push_to: str | None = None,
        async_save: bool | None = None,
        snapshot: str = "lazy",
    ) -> None:
        self.model = _state.check_model(model)
        self.distributed = _dist.check_distributed_mode(distributed)
        if barrier_timeout is not None and (
            isinstance(barrier_timeout, bool) or not isinstance(barrier_timeout, (int, float)) or barrier_timeout <= 0
        ):
            raise InvalidArgumentError("barrier_timeout", barrier_timeout, "must be a positive number of seconds")
        self._timeout = barrier_timeout
        self.optimizer = _state.check_optimizer(optimizer)
        self.scheduler = _state.check_scheduler(scheduler)
        if resume not in (False, True, "best"):
            raise InvalidArgumentError("resume", resume, "must be False, True (latest) or 'best'")
        if tracker is not None and not isinstance(tracker, Tracker):
            raise InvalidArgumentError(
                "tracker", type(tracker).__name__, "needs start_run, log_metrics, log_checkpoint, end_run"
            )
        policy = (every_n_epochs, every_n_steps, on_best, keep_last, keep_best)
        if config is not None and (any(v is not None for v in policy) or minimize is not True):
            raise InvalidArgumentError(
                "config", "CheckpointConfig", "give either config= or the policy keywords, not both"
            )
        if config is None:
            if every_n_epochs is None and every_n_steps is None and on_best is None:
                every_n_epochs = 1
            config = CheckpointConfig(
                save_every_n_epochs=every_n_epochs, save_every_n_steps=every_n_steps, save_on_best_metric=on_best,
                minimize_metric=minimize, keep_last_n_checkpoints=keep_last, keep_best_n_checkpoints=keep_best,
            )
        if push_to is not None:  # pushed to that remote in the background after each save
            config = dataclasses.replace(config, push_to=push_to)
        if async_save is not None:
            if not isinstance(async_save, bool):
                raise InvalidArgumentError("async_save", async_save, "must be True or False")
            config = dataclasses.replace(config, async_save=async_save)
        if snapshot not in SNAPSHOTS:
            raise InvalidArgumentError("snapshot", snapshot, f"must be one of {', '.join(map(repr, SNAPSHOTS))}")
        self.snapshot = snapshot
        self._repo = _state.open_repository(repo_or_path)
        self.manager = CheckpointManager(self._repo, config, type(model).__name__, experiment, hparams=hparams)
        self.manager.provenance.add_source(self.optimizer, key="optimizer")
        self.config = config
        self.data = data
        self.tracker = tracker
        self._epoch = 0
        self._global_step = 0
        self._metrics: dict[str, Any] = {}
        self._run_open = False
        self._stop_early: bool | None = None
        self.resumed_from: str | None = None
        self.manager.register_checkpoint_callback(self._saved)
        self._step_gate = None
        if self._lazy:  # the lazy snapshot: the optimizer's step waits for a copy still in flight
            self._step_gate = self.optimizer.register_step_pre_hook(self._before_step)
        self.preemption = PreemptionGuard.from_config(config)
        if resume:
            self._resume(best=resume == "best")
        self.preemption.install()

    # ---- resume ------------------------------------------------------------------------------------------
    def _resume_target(self, best: bool) -> str | None:
        if self.distributed == "dcp":
            from . import dcp

            return dcp.latest_checkpoint(self._repo, self.manager.experiment_name)
        if best and self.manager.best_checkpoint_hash:
            return self.manager.best_checkpoint_hash
        live = [h for h in self.manager.list_checkpoints() if not h.get("pruned")]
        return str(live[-1]["commit_hash"]) if live else None

    def _resume(self, best: bool) -> None:
        # rank 0 picks the commit: every rank loads the same one, even if a save lands meanwhile
        target = _dist.run_on_rank0(lambda: self._resume_target(best), "resume", self._timeout)
        if target is None:
            log.info("experiment %r has no checkpoint yet: starting fresh", self.manager.experiment_name)
            return
        if self.distributed == "dcp":
            from . import dcp

            ckpt = dcp.load_training_checkpoint(self._repo, target, self.model, self.optimizer)
            complete = _state.restore(
                ckpt, self.model, scheduler=self.scheduler, data=self.data, load_rng=False, strict=False
            )
        else:
            ckpt = self.manager.load_checkpoint(commit_hash=target)
            complete = _state.restore(
                ckpt, self.model, optimizer=self.optimizer, scheduler=self.scheduler, data=self.data
            )
        state: TrainingState = ckpt["state"]
        self._epoch = state.epoch + 1 if complete else state.epoch
        self._global_step = state.global_step
        self._metrics = dict(state.metrics) | ({"loss": state.loss} if state.loss is not None else {})
        self.resumed_from = str(ckpt["commit_hash"])
        log.info("resumed %r from %s (next epoch %d, step %d)", self.manager.experiment_name,
                 self.resumed_from[:12], self._epoch, self._global_step)

    # ---- logging and saving ------------------------------------------------------------------------------
    def log(self, epoch: int, step: int | None = None, **metrics: Any) -> str | None:
        """Record the metrics of (finished) epoch ``epoch`` at ``step``; save when the policy says so.

        Returns the commit hash of the checkpoint saved, or None.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidArgumentError("epoch", epoch, "must be a non-negative integer")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise InvalidArgumentError("step", step, "must be a non-negative integer or None")
        values = {k: _state.number(k, v) for k, v in metrics.items()}
        self._global_step = self._global_step if step is None else step
        self._metrics.update(values)
        if _dist.rank() == 0:  # one tracker run per job, not one per rank
            self._ensure_run()
            if self.tracker is not None:
                numeric = {k: v for k, v in values.items() if _state.finite(v)}
                if numeric:
                    self.tracker.log_metrics(numeric, step=self._global_step)
        if self.preemption.check():  # every rank alike (an all-reduce in a process group): outside run_on_rank0
            commit = self._save_preempted(epoch, values)
        elif self.distributed == "dcp":
            # every rank writes its shards: the decision is rank 0's, shared before anyone writes
            probe = self._state(epoch, values, with_tensors=False)
            due = _dist.run_on_rank0(lambda: self.manager.should_save_checkpoint(probe), "log", self._timeout)
            commit = self._dcp_save(epoch, values, complete=True) if due else None
        else:
            commit = _dist.run_on_rank0(lambda: self._log_on_rank0(epoch, values), "log", self._timeout)
        if _dist.is_distributed():  # rank 0's early-stopping verdict: every rank stops at the same epoch
            self._stop_early = _dist.broadcast(self.manager.should_stop_early)
        self._epoch = epoch if self.data is not None and is_mid_epoch(self.data) else epoch + 1
        return commit

    def _log_on_rank0(self, epoch: int, values: dict[str, Any]) -> str | None:
        probe = self._state(epoch, values, with_tensors=False)
        if self.manager.should_save_checkpoint(probe):
            return self._save_now(epoch, values, complete=True)
        return self.manager.save_checkpoint({}, probe)  # keeps early-stopping counts; saves nothing

    def _dcp_save(
        self, epoch: int, values: dict[str, Any], *, complete: bool, metadata: dict[str, Any] | None = None
    ) -> str:
        from . import dcp

        state = self._state(epoch, values, with_tensors=False, epoch_complete=complete)
        if self.scheduler is not None:
            state.scheduler_state = PyTorchIntegration.save_scheduler_state(self.scheduler)
        commit = dcp.save_training_checkpoint(
            self._repo, self.model, self.optimizer, state, experiment=self.manager.experiment_name,
            epoch_complete=complete, data=self.data, extra_metadata=metadata,
        )
        if _dist.rank() == 0:
            self._saved(state, commit)
            self.manager.request_push()  # a sharded save commits outside the manager: push_to still applies
        return commit

    def _save_preempted(self, epoch: int, values: dict[str, Any]) -> str | None:
        """The preemption checkpoint at this very step, waited for (with its push) within the deadline.

        Rank 0 commits and waits inside the save point, so every rank gets the hash and stops together."""
        if self.distributed == "dcp":  # every rank writes its shards
            commit = self._dcp_save(
                epoch, values, complete=True, metadata=self.preemption.metadata(self._global_step)
            )
            self.preemption.finish(self.manager.wait, commit)
            return commit

        def on_rank0() -> str | None:
            state = self._state(epoch, values, with_tensors=True)
            saved = self.manager.save_checkpoint(
                _state.model_weights(self.model, self.manager), state, force=True,
                metadata=self.preemption.metadata(self._global_step), synchronous=True,
            )
            self.preemption.finish(self.manager.wait, saved)
            return saved

        commit = _dist.run_on_rank0(on_rank0, "preemption", self._timeout)
        if not self.preemption.should_stop:  # the other ranks: rank 0 has saved (and pushed) already
            self.preemption.finish(lambda: None, commit)
        return commit

    def save(self, epoch: int | None = None, step: int | None = None, **metrics: Any) -> str | None:
        """Save a checkpoint now, whatever the policy (e.g. before a planned stop); ``epoch`` defaults to the
        last one logged."""
        complete = not (epoch is None and self._epoch == 0)  # nothing logged yet: epoch 0 is still to run
        if epoch is None:
            epoch = max(self._epoch - 1, 0)
        if step is not None:
            self._global_step = step
        values = {k: _state.number(k, v) for k, v in metrics.items()}
        self._metrics.update(values)
        if self.distributed == "dcp":
            return self._dcp_save(epoch, values, complete=complete)

        return _dist.run_on_rank0(lambda: self._save_now(epoch, values, complete=complete), "save", self._timeout)

    @property
    def _lazy(self) -> bool:
        return self.config.async_save and self.snapshot == "lazy" and self.optimizer is not None

    def _save_now(self, epoch: int, values: dict[str, Any], *, complete: bool) -> str | None:
        """One checkpoint through the manager; with the lazy snapshot, live tensors are tracked, not copied."""
        state = self._state(epoch, values, with_tensors=True, epoch_complete=complete)
        weights = _state.model_weights(self.model, self.manager)
        if not self._lazy:
            return self.manager.save_checkpoint(weights, state, force=True)
        guard = VersionGuard()
        weights = lazy_weights(_dist.unwrap(self.model), weights, guard)
        if state.optimizer_state is not None:
            track_optimizer(self.optimizer, guard)
        return self.manager.save_checkpoint(weights, state, force=True, lazy_guard=guard)

    def _before_step(self, *_args: Any) -> None:
        """Optimizer step pre-hook: the lazy snapshot in flight must be out of the tensors step() writes."""
        self.manager.wait_snapshot()

    def _state(
        self, epoch: int, metrics: dict[str, Any], *, with_tensors: bool, epoch_complete: bool = True
    ) -> TrainingState:
        return _state.build_state(
            self.manager, epoch=epoch, global_step=self._global_step, metrics=metrics,
            optimizer=self.optimizer, scheduler=self.scheduler, data=self.data,
            epoch_complete=epoch_complete, with_tensors=with_tensors,
        )

    def _saved(self, state: TrainingState, commit_hash: str | None) -> None:
        if commit_hash is not None and self.tracker is not None:
            _state.guarded(
                self.tracker.log_checkpoint, commit_hash, step=state.global_step, metadata={"epoch": state.epoch}
            )

    # ---- tracker run -------------------------------------------------------------------------------------
    def _ensure_run(self) -> None:
        if self.tracker is None or self._run_open:
            return
        cfg = self.config
        params = {
            "coral.experiment": self.manager.experiment_name,
            "coral.repository": str(self._repo.path or self._repo),
            "model": type(self.model).__name__,
            "optimizer": type(self.optimizer).__name__ if self.optimizer is not None else None,
            "scheduler": type(self.scheduler).__name__ if self.scheduler is not None else None,
            "every_n_epochs": cfg.save_every_n_epochs,
            "every_n_steps": cfg.save_every_n_steps,
            "on_best": cfg.save_on_best_metric,
            "resumed_from": self.resumed_from,
        }
        self.tracker.start_run(
            run_name=self.manager.experiment_name, params={k: v for k, v in params.items() if v is not None}
        )
        self._run_open = True

    def close(self, status: str = "completed") -> None:
        """Wait for pending saves, end the tracker run with ``status`` and put the signal handlers back."""
        if self.preemption.should_stop and status == "completed":
            status = "killed"  # the tracker run ends KILLED, like a run stopped by a signal
        try:
            self.manager.wait(packing=False)  # packing goes on in the background (at exit: a detached process)
        except BaseException:
            status = "failed"
            raise
        finally:
            if self._step_gate is not None:
                self._step_gate.remove()
                self._step_gate = None
            self.preemption.uninstall()
            if self.tracker is not None and self._run_open:
                self.tracker.end_run(status)
                self._run_open = False

    @property
    def should_stop(self) -> bool:
        """True once a preemption signal arrived and its checkpoint is saved: end the training loop now."""
        return self.preemption.should_stop

    def exit_if_preempted(self) -> None:
        """Raise ``SystemExit(128 + signum)`` (143 for SIGTERM) if the run stopped for a preemption."""
        self.preemption.exit_if_preempted()

    def __enter__(self) -> Self:
        if _dist.rank() == 0:
            self._ensure_run()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close("failed" if exc_type is not None else "completed")
        if exc_type is None:
            self.exit_if_preempted()  # the process reports the signal's conventional code (143 for SIGTERM)

    # ---- properties --------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch to run next: 0 on a fresh run, one past the last logged (or resumed) epoch."""
        return self._epoch

    @property
    def global_step(self) -> int:
        return self._global_step

    @property
    def best_commit(self) -> str | None:
        """Commit hash of the best checkpoint so far (``on_best``), or None."""
        return self.manager.best_checkpoint_hash

    @property
    def last_commit(self) -> str | None:
        """Commit hash of the newest checkpoint, or None."""
        return self.manager.last_commit_hash

    @property
    def metrics(self) -> dict[str, Any]:
        """The latest value of every metric logged (or restored on resume)."""
        return dict(self._metrics)

    @property
    def repo(self) -> Repository:
        return self._repo

    @property
    def should_stop_early(self) -> bool:
        return self.manager.should_stop_early if self._stop_early is None else self._stop_early

    def __repr__(self) -> str:
        return f"Checkpointer({self.manager.experiment_name!r}, epoch={self._epoch}, step={self._global_step})"

