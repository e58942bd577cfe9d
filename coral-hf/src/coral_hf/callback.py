"""CoralTrainerCallback: version HF Trainer checkpoints in a Coral repository, resumable bit for bit.

Each checkpoint is one commit made by :class:`coral.training.CheckpointManager`: the model's ``state_dict``,
the optimizer, scheduler and RNG state as tensors, and in ``metadata["hf"]`` the TrainerState,
``TrainingArguments.to_dict()`` and ``model.config.to_dict()`` (their JSON-safe parts).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Unpack

import torch
import transformers
from coral import Repository
from coral.errors import CheckpointError, CoralError, InvalidArgumentError, RemotesUnavailableError
from coral.plugins import get_plugin_manager
from coral.training import CheckpointManager, PreemptionGuard, TrainingState
from coral.training.callback_setup import CallbackOptions, CallbackSetup, use_branch
from coral.training.layout import STATE_ROOTS
from coral_torch import PyTorchIntegration
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .jsonsafe import json_safe

log = logging.getLogger(__name__)


def _unwrap(model: Any) -> Any:
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


class CoralTrainerCallback(TrainerCallback, CallbackSetup):
    """Commit checkpoints of a ``transformers.Trainer`` run to a Coral repository.

    Saves every ``save_every_n_steps`` steps, every ``save_every_n_epochs`` epochs, whenever the Trainer itself
    saves (``save_on_trainer_save``), when ``save_on_best`` (an eval metric such as ``"eval_loss"``) improves
    by ``mode``, and at the end of training. Only the world process zero writes. On a preemption signal
    (SIGTERM by default) it commits at the next step end, sets ``control.should_training_stop`` and
    ``trainer.train()`` ends with ``SystemExit(128 + signum)`` (143 for SIGTERM).
    """

    def __init__(
        self,
        repo: Repository | str | os.PathLike[str] | None = None,
        *,
        repo_path: str | os.PathLike[str] | None = None,
        init: bool = False,
        save_on_trainer_save: bool = True,
        save_on_train_end: bool = True,
        async_save: bool = False,
        **options: Unpack[CallbackOptions],
    ) -> None:
        """``repo`` (a Repository or a path) or ``repo_path``; the shared options are
        :class:`coral.training.callback_setup.CallbackOptions` (``save_on_best="accuracy"`` means
        ``"eval_accuracy"``, as with ``TrainingArguments.metric_for_best_model``)."""
        for flag, value in {
            "save_on_trainer_save": save_on_trainer_save,
            "save_on_train_end": save_on_train_end,
            "async_save": async_save,
        }.items():
            if not isinstance(value, bool):
                raise InvalidArgumentError(flag, value, "must be True or False")
        self.repo = self.setup_checkpointing(repo, repo_path, init, options, fallback_name="hf-trainer")
        if self.save_on_best is not None and not self.save_on_best.startswith("eval_"):
            self.save_on_best = f"eval_{self.save_on_best}"
        self.save_on_trainer_save = save_on_trainer_save
        self.save_on_train_end = save_on_train_end
        config = self.checkpoint_config(
            save_every_n_steps=self.save_every_n_steps,
            save_every_n_epochs=self.save_every_n_epochs,
            async_save=async_save,
            commit_message_template="HF Trainer checkpoint at step {global_step}",
        )
        # Load Coral's plugins now, before the Trainer seeds its RNGs: some plugin imports draw from python's
        # `random`, and doing that at the first save would steer a straight run away from a resumed one.
        get_plugin_manager()
        self.manager = CheckpointManager(self.repo, config, experiment_name=self.experiment_name)
        self.preemption = PreemptionGuard.from_config(config)
        self._training = False
        self._pending: str | None = None
        self._last_saved_step = -1
        self._logs: dict[str, Any] = {}
        self._logs_step = -1
        self._eval_metrics: dict[str, Any] = {}
        self._eval_step = -1
        self._warned_metric = False
        self._warned_no_eval = False

    # ---- Trainer events ----------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = True
        self.preemption = PreemptionGuard.from_config(self.manager.config)
        self.preemption.install()
        self._pending = None
        self._eval_metrics, self._eval_step = {}, -1
        self._last_saved_step = state.global_step  # a resumed run does not re-save the step it resumed from
        self._warn_if_never_evaluated(args)
        if state.is_world_process_zero and self.branch is not None:
            use_branch(self.repo, self.branch)
        model = _unwrap(kwargs.get("model"))
        if model is not None:
            self.manager.model_name = type(model).__name__

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._pending:  # the evaluation we waited for did not run
            self._save(args, state, control, kwargs, self._pending)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.preemption.check():  # every rank alike (an all-reduce in a process group)
            commit = self._save(args, state, control, kwargs, "preemption",
                                extra=self.preemption.metadata(state.global_step))
            self.preemption.finish(self.manager.wait, commit)
            control.should_training_stop = True
            return
        n = self.save_every_n_steps
        if n and state.global_step % n == 0:
            self._save_or_wait_for_eval(args, state, control, kwargs, "step")

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        n = self.save_every_n_epochs
        done = round(state.epoch or 0)
        if n and done > 0 and math.isclose(state.epoch or 0, done, abs_tol=1e-9) and done % n == 0:
            self._save_or_wait_for_eval(args, state, control, kwargs, "epoch")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs:
            if self._logs_step != state.global_step:
                self._logs = {}
            self._logs.update(logs)
            self._logs_step = state.global_step

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._training:
            return
        metrics = dict(metrics or {})
        # kept for any other save at this step (the Trainer's own on_save comes right after the evaluation)
        self._eval_metrics, self._eval_step = metrics, state.global_step
        improved = False
        if self.save_on_best is not None:
            value = metrics.get(self.save_on_best)
            if value is None:
                if not self._warned_metric:
                    log.warning(
                        "save_on_best=%r is not among the evaluation metrics %s",
                        self.save_on_best,
                        sorted(metrics),
                    )
                    self._warned_metric = True
            else:
                improved = self._improves(float(value))
        if self._pending or improved:
            self._save(args, state, control, kwargs, self._pending or "best", metrics=metrics, again=improved)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._pending or self.save_on_trainer_save:
            self._save(args, state, control, kwargs, self._pending or "trainer_save")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        try:
            if self._pending:
                self._save(args, state, control, kwargs, self._pending)
            if self.save_on_train_end:
                if args.load_best_model_at_end and state.best_model_checkpoint is not None:
                    log.info(
                        "load_best_model_at_end replaced the final weights with the best ones: no final Coral save"
                    )
                else:
                    self._save(args, state, control, kwargs, "train_end")
            self.manager.wait(packing=False)  # packing goes on in the background (at exit: a detached process)
        finally:
            self._training = False
            self.preemption.uninstall()
        self.preemption.exit_if_preempted()  # a preempted run does not go on to what follows train()

    def _warn_if_never_evaluated(self, args: TrainingArguments) -> None:
        """``save_on_best`` needs evaluations: say so once when the Trainer is set to run none."""
        strategy = getattr(args, "eval_strategy", None) or getattr(args, "evaluation_strategy", None)
        if self.save_on_best is None or self._warned_no_eval or str(getattr(strategy, "value", strategy)) != "no":
            return
        self._warned_no_eval = True
        log.warning(
            "CoralTrainerCallback(save_on_best=%r) will never save on the metric: TrainingArguments has "
            "eval_strategy='no'; set eval_strategy='steps' or 'epoch' (and an eval_dataset)",
            self.save_on_best,
        )

    # ---- saving ------------------------------------------------------------------------------------------
    def _save_or_wait_for_eval(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        kwargs: dict[str, Any],
        event: str,
    ) -> None:
        # An evaluation about to run draws from the torch RNG (a new DataLoader iterator); saving after it
        # records the RNG the rest of the run continues from, as the Trainer's own checkpoints do.
        if control.should_evaluate:
            self._pending = self._pending or event
        else:
            self._save(args, state, control, kwargs, event)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        best = self.manager.best_metric_value
        return best is None or (value < best if self.mode == "min" else value > best)

    def _save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        kwargs: dict[str, Any],
        event: str,
        metrics: dict[str, Any] | None = None,
        again: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> str | None:
        self._pending = None
        if not state.is_world_process_zero or args.process_index != 0:
            return None
        if state.global_step == self._last_saved_step and not again and extra is None:
            return None
        if metrics is None and self._eval_step == state.global_step:
            metrics = self._eval_metrics
        model = _unwrap(kwargs.get("model"))
        if model is None:
            raise CoralError("the Trainer passed no model to CoralTrainerCallback")
        optimizer, scheduler = kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        numbers = {
            k: v
            for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        logs = self._logs if self._logs_step == state.global_step else {}
        training_state = TrainingState(
            epoch=int(state.epoch or 0),
            global_step=state.global_step,
            learning_rate=_current_lr(scheduler, logs),
            loss=_number(logs.get("loss")),
            metrics=numbers,
            # no copies: the manager writes at once, or snapshots itself before an async write
            optimizer_state=PyTorchIntegration.save_optimizer_state(optimizer, copy=False)
            if self.include_optimizer and optimizer is not None
            else None,
            scheduler_state=(
                PyTorchIntegration.save_scheduler_state(scheduler)
                if self.include_optimizer and scheduler is not None and hasattr(scheduler, "state_dict")
                else None
            ),
            batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            max_steps=state.max_steps or None,
            model_name=type(model).__name__,
        )
        hf = {
            "event": event,
            "trainer_state": _trainer_state(state, control),
            "training_args": json_safe(args.to_dict(), "training_args"),
            "model_config": model_config(model),
            "world_size": int(args.world_size),
            "transformers_version": transformers.__version__,
        }
        if self.metadata_keys:
            hf["values"] = json_safe(
                {k: v for k in self.metadata_keys if (v := _lookup(k, numbers, logs, state)) is not None}
            )
        self.manager.provenance.add_source(args)  # provenance: TrainingArguments' lr, batch size, seed...
        self.manager.provenance.add_source(optimizer, "optimizer")
        commit = self.manager.save_checkpoint(
            PyTorchIntegration.model_to_weights(model, copy=False), training_state, force=True,
            metadata={"hf": hf, **(extra or {})}, synchronous=extra is not None,
        )
        self._last_saved_step = state.global_step
        log.info("Coral checkpoint %s at step %d (%s)", (commit or "async")[:12], state.global_step, event)
        return commit

    # ---- loading -----------------------------------------------------------------------------------------
    @property
    def last_commit_hash(self) -> str | None:
        """The newest checkpoint of this experiment that retention kept, or None."""
        live = [h["commit_hash"] for h in self.manager.checkpoint_history if not h.get("pruned")]
        return live[-1] if live else None

    @property
    def best_commit_hash(self) -> str | None:
        """The checkpoint with the best ``save_on_best`` value so far (also tagged ``best-<experiment>``), or None."""
        return self.manager.best_checkpoint_hash

    def load_from_coral(
        self, model: torch.nn.Module, commit_ref: str | None = None, strict: bool = True
    ) -> str:
        """Copy a checkpoint's weights into ``model`` in place and return its commit hash.

        ``commit_ref=None`` means the best checkpoint when ``save_on_best`` produced one, else the latest;
        ``"best"``, ``"last"`` and any ref (branch, tag, hash, ``HEAD~N``) work too. With ``strict`` the names
        must match exactly; a shape mismatch always raises.
        """
        self.manager.wait()
        if commit_ref in (None, "best", "last"):
            best = self.best_commit_hash if commit_ref != "last" else None
            target = best or (self.last_commit_hash if commit_ref != "best" else None)
            if target is None:
                raise CheckpointError(
                    f"no {commit_ref or 'saved'} checkpoint in experiment {self.manager.experiment_name!r}"
                )
            commit_ref = target
        commit_hash = self.repo.resolve(commit_ref)
        weights = {
            n: w
            for n, w in self.repo.get_weights(commit_hash).items()
            if n.split("/", 1)[0] not in STATE_ROOTS
        }
        PyTorchIntegration.weights_to_model(weights, _unwrap(model), strict=strict)
        return commit_hash


CoralHFCallback = CoralTrainerCallback


def model_config(model: Any) -> dict[str, Any] | None:
    """``model.config.to_dict()`` with ``architectures`` filled in the way ``save_pretrained`` does."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    out = json_safe(config.to_dict(), "model_config")
    if not out.get("architectures"):
        out["architectures"] = [type(model).__name__]
    return out


def _trainer_state(state: TrainerState, control: TrainerControl) -> dict[str, Any]:
    """The TrainerState as ``trainer_state.json`` holds it, TrainerControl's state brought up to date as on a save."""
    doc = dataclasses.asdict(state)
    callbacks = dict(doc.get("stateful_callbacks") or {})
    if "TrainerControl" in callbacks and hasattr(control, "state"):
        callbacks["TrainerControl"] = control.state()
    doc["stateful_callbacks"] = callbacks
    return json_safe(doc, "trainer_state")


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _current_lr(scheduler: Any, logs: dict[str, Any]) -> float | None:
    if _number(logs.get("learning_rate")) is not None:
        return _number(logs["learning_rate"])
    get_last_lr = getattr(scheduler, "get_last_lr", None)
    if not callable(get_last_lr):
        return None
    try:
        return _number(get_last_lr()[0])
    except (IndexError, TypeError, RuntimeError):
        return None


def _lookup(key: str, metrics: dict[str, Any], logs: dict[str, Any], state: TrainerState) -> Any:
    if key in metrics:
        return metrics[key]
    if key in logs:
        return logs[key]
    return getattr(state, key, None)


__all__ = ["CoralHFCallback", "CoralTrainerCallback", "RemotesUnavailableError", "model_config", "use_branch"]
