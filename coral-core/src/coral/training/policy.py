"""SavePolicy: when to save (step/epoch/metric rules, Young-Daly auto interval, early stopping) and what to keep.

It holds no repository: CheckpointManager asks it before each save, tells it what was saved, and persists
``to_doc()`` with the checkpoint history so decisions survive restarts.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .config import CheckpointConfig
from .retention import RetentionRules
from .state import TrainingState

DEFAULT_RANKING_METRIC = "loss"
"""What ``keep_best_n_checkpoints`` ranks by (lower is better) when ``save_on_best_metric`` names nothing."""


class SavePolicy:
    """The save and keep decisions of one experiment, from a CheckpointConfig and what was saved so far."""

    def __init__(self, config: CheckpointConfig) -> None:
        self.config = config
        self.best_metric_value: float | None = None
        self.best_checkpoint_hash: str | None = None
        self.no_improvement_count = 0
        self.early_best: float | None = None
        self.last_saved_at: tuple[int, int] | None = None
        self.last_saved_step = 0
        self.save_costs: list[float] = []
        self.step_times: list[tuple[int, float]] = []

    # ---- persisted part ------------------------------------------------------------------------------------
    def to_doc(self) -> dict[str, Any]:
        """The decisions that must survive a restart (best so far, early-stopping counters)."""
        return {
            "best_metric_value": self.best_metric_value,
            "best_checkpoint_hash": self.best_checkpoint_hash,
            "no_improvement_count": self.no_improvement_count,
            "early_best": self.early_best,
        }

    def load_doc(self, doc: dict[str, Any], last_record: dict[str, Any] | None) -> None:
        """Take back ``to_doc()``'s fields; raises TypeError/ValueError on a malformed document."""
        self.best_metric_value = _opt_float(doc.get("best_metric_value"))
        best = doc.get("best_checkpoint_hash")
        if best is not None and not isinstance(best, str):
            raise TypeError("best_checkpoint_hash is not a string")
        self.best_checkpoint_hash = best
        self.no_improvement_count = int(doc.get("no_improvement_count", 0))
        self.early_best = _opt_float(doc.get("early_best"))
        self.last_saved_at = (last_record.get("epoch"), last_record.get("global_step")) if last_record else None  # type: ignore[assignment]

    # ---- the watched metric -------------------------------------------------------------------------------
    def metric(self, state: TrainingState) -> float | None:
        """The value of ``save_on_best_metric`` in ``state`` (``loss`` falls back to ``state.loss``), or None."""
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

    def better(self, value: float, than: float | None, margin: float = 0.0) -> bool:
        if than is None:
            return True
        return value < than - margin if self.config.minimize_metric else value > than + margin

    def is_best(self, value: float | None) -> bool:
        """True when ``value`` beats the best saved so far."""
        return value is not None and self.better(value, self.best_metric_value)

    # ---- when to save --------------------------------------------------------------------------------------
    def auto_interval(self) -> int | None:
        """The Young-Daly interval in steps from the measured save cost and step time, or None before both."""
        if not self.save_costs or len(self.step_times) < 2:
            return None
        (s0, t0), (s1, t1) = self.step_times[0], self.step_times[-1]
        if s1 <= s0:
            return None
        step_time = max((t1 - t0) / (s1 - s0), 1e-9)
        cost = float(np.median(self.save_costs))
        interval_seconds = math.sqrt(2.0 * cost * float(self.config.mean_time_between_failures or 0))
        return max(1, int(round(interval_seconds / step_time)))

    def should_save(self, state: TrainingState) -> bool:
        """True when any condition holds: every N steps, every N epochs, or the watched metric improved."""
        cfg = self.config
        # the step and epoch rules never save a second copy of the state just saved (a step save, then epoch
        # end at the same step); only a better metric can
        fresh = (state.epoch, state.global_step) != self.last_saved_at
        if fresh and self._step_rule_due(state):
            return True
        if fresh and cfg.save_every_n_epochs and state.epoch % cfg.save_every_n_epochs == 0:
            return True
        return self.is_best(self.metric(state))

    def _step_rule_due(self, state: TrainingState) -> bool:
        cfg = self.config
        if cfg.save_every_n_steps == "auto":
            if not self.step_times or self.step_times[-1][0] != state.global_step:
                self.step_times.append((state.global_step, time.perf_counter()))
                self.step_times = self.step_times[-1000:]
            interval = self.auto_interval()
            if interval is None:  # measure the cost of one save first
                return not self.save_costs and state.global_step > 0 and len(self.step_times) >= 2
            return state.global_step - self.last_saved_step >= interval
        n = cfg.save_every_n_steps
        return bool(n) and state.global_step > 0 and state.global_step % n == 0  # type: ignore[operator]

    # ---- early stopping ------------------------------------------------------------------------------------
    @property
    def should_stop_early(self) -> bool:
        p = self.config.early_stopping_patience
        return p is not None and self.no_improvement_count >= p

    def update_early_stopping(self, state: TrainingState) -> bool:
        """Count an evaluation towards early stopping; True when the persisted counters changed."""
        if self.config.early_stopping_patience is None:
            return False
        value = self.metric(state)
        if value is None:
            return False
        if self.better(value, self.early_best, self.config.early_stopping_threshold):
            self.early_best = value
            self.no_improvement_count = 0
        else:
            self.no_improvement_count += 1
        return True

    # ---- after a save --------------------------------------------------------------------------------------
    def record_save(self, state: TrainingState, commit_hash: str, value: float | None, is_best: bool) -> None:
        """Note a written checkpoint: the new best, and where the step/epoch rules count from."""
        if is_best:
            self.best_metric_value = value
            self.best_checkpoint_hash = commit_hash
        self.last_saved_step = state.global_step
        self.last_saved_at = (state.epoch, state.global_step)

    def record_cost(self, seconds: float) -> None:
        self.save_costs.append(seconds)

    # ---- what to keep --------------------------------------------------------------------------------------
    @property
    def ranking_metric(self) -> str:
        """The metric ``keep_best_n_checkpoints`` ranks by: ``save_on_best_metric``, else ``loss``."""
        return self.config.save_on_best_metric or DEFAULT_RANKING_METRIC

    def rank_value(self, record: dict[str, Any]) -> float | None:
        """A history record's value for ``keep_best_n_checkpoints`` (None: not ranked)."""
        if self.config.save_on_best_metric is not None:
            value = record.get("metric_value")
        else:
            value = (record.get("metrics") or {}).get(DEFAULT_RANKING_METRIC)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value)

    def retention_rules(self) -> RetentionRules:
        """The config's keep_* options as RetentionRules over history records."""
        cfg = self.config
        return RetentionRules(
            last_n=cfg.keep_last_n_checkpoints,
            best_n=cfg.keep_best_n_checkpoints,
            rank=self.rank_value,
            minimize=cfg.minimize_metric if cfg.save_on_best_metric is not None else True,
            every_n=cfg.keep_checkpoint_every_n_epochs,
            period_of=lambda record: int(record["epoch"]),
        )


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)
