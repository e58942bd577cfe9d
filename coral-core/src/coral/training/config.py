"""CheckpointConfig: when to save, what to keep and what to store; validated at construction."""

from __future__ import annotations

import math
import os
import string
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config_file import checkpoint_fields, parse_size
from .preemption import check_signals

_INT_OR_NONE = (
    "save_every_n_epochs", "keep_last_n_checkpoints", "keep_best_n_checkpoints",
    "keep_checkpoint_every_n_epochs", "early_stopping_patience",
)
_BOOLS = (
    "minimize_metric", "save_optimizer_state", "save_scheduler_state", "save_random_state",
    "use_incremental_saves", "auto_commit", "tag_best_checkpoints", "async_save", "save_on_preemption",
    "skip_save_if_busy",
)


@dataclass
class CheckpointConfig:
    """Checkpoint policy. Any save condition triggers a save; any retention rule keeps a checkpoint.

    ``keep_best_n_checkpoints`` ranks by ``save_on_best_metric``, or by ``loss`` (lower is better) when no metric
    is named. ``min_free_space`` takes bytes or a size such as ``"10GB"`` (powers of ten; ``"10GiB"``: of two).

    ``save_every_n_steps="auto"`` with ``mean_time_between_failures`` (seconds) picks the step interval by the
    Young-Daly rule sqrt(2 x save cost x MTBF) from the measured cost of the saves so far.

    ``save_on_preemption`` (on by default): when one of ``preemption_signals`` arrives, the integrations save
    at the next step boundary, wait up to ``preemption_deadline`` seconds for it, stop and exit 128+signum
    (preemption.py).

    ``async_save``: at most one save is in flight; a save asked for while one is still being written waits
    for it, or with ``skip_save_if_busy`` is skipped with a warning (the loop never waits on the disk).
    """

    save_every_n_epochs: int | None = None
    save_every_n_steps: int | str | None = None
    save_on_best_metric: str | None = None
    minimize_metric: bool = True
    keep_last_n_checkpoints: int | None = None
    keep_best_n_checkpoints: int | None = None
    keep_checkpoint_every_n_epochs: int | None = None
    save_optimizer_state: bool = True
    save_scheduler_state: bool = True
    save_random_state: bool = True
    use_incremental_saves: bool = True
    auto_commit: bool = True
    commit_message_template: str = "Checkpoint at epoch {epoch}, step {global_step}"
    tag_best_checkpoints: bool = True
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    async_save: bool = False
    skip_save_if_busy: bool = False
    min_free_space: int | str | None = None
    mean_time_between_failures: float | None = None
    push_to: str | None = None
    save_on_preemption: bool = True
    preemption_signals: tuple[str, ...] = ("SIGTERM",)
    preemption_deadline: float = 90.0

    def __post_init__(self) -> None:
        for name in _INT_OR_NONE:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(name, v, "must be a positive integer or None")
        v = self.save_every_n_steps
        if isinstance(v, str) and v == "auto":
            if self.mean_time_between_failures is None:
                raise ConfigError(
                    "mean_time_between_failures", None, "save_every_n_steps='auto' needs the MTBF in seconds"
                )
        elif v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError("save_every_n_steps", v, "must be a positive integer, 'auto' or None")
        m = self.mean_time_between_failures
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not _finite(m) or m <= 0):
            raise ConfigError("mean_time_between_failures", m, "must be a positive number of seconds")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be True or False")
        best = self.save_on_best_metric
        if best is not None and (not isinstance(best, str) or not best):
            raise ConfigError("save_on_best_metric", self.save_on_best_metric, "must be a metric name")
        if not isinstance(self.commit_message_template, str):
            raise ConfigError("commit_message_template", self.commit_message_template, "must be a format string")
        try:
            for _text, _field, spec, _conv in string.Formatter().parse(self.commit_message_template):
                if spec and "{" not in spec:
                    format(0.0 if any(c in spec for c in "eEfFgG%") else 0, spec)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "commit_message_template", self.commit_message_template, f"is not a valid format string: {exc}"
            ) from None
        t = self.early_stopping_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not _finite(t) or t < 0:
            raise ConfigError("early_stopping_threshold", t, "must be a finite number >= 0")
        if self.early_stopping_patience is not None and self.save_on_best_metric is None:
            raise ConfigError(
                "early_stopping_patience", self.early_stopping_patience, "needs save_on_best_metric to watch"
            )
        self.preemption_signals = check_signals(self.preemption_signals)
        d = self.preemption_deadline
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not _finite(d) or d <= 0:
            raise ConfigError("preemption_deadline", d, "must be a positive number of seconds")
        # keep_best_n_checkpoints without save_on_best_metric ranks by loss (lower is better): see SavePolicy
        self.min_free_space = parse_size("min_free_space", self.min_free_space)
        check_push_to(self.push_to)
        f = self.min_free_space
        if f is not None and (isinstance(f, bool) or not isinstance(f, int) or f < 0):
            raise ConfigError("min_free_space", f, "must be a number of bytes >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                unknown[0], data[unknown[0]], f"unknown CheckpointConfig field (known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> CheckpointConfig:
        """Read the ``[checkpoint]`` table of a TOML file (sub-tables and LlamaHome-style keys: config_file.py)."""
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("path", str(path), f"cannot read TOML: {exc}") from None
        table = doc.get("checkpoint")
        if not isinstance(table, dict):
            raise ConfigError("path", str(path), "has no [checkpoint] table")
        return cls.from_dict(checkpoint_fields(table, f"{path} [checkpoint]"))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, prefix: str = "CORAL_") -> CheckpointConfig:
        """Build from ``CORAL_<FIELD>`` variables (e.g. ``CORAL_SAVE_EVERY_N_STEPS=500``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = prefix + f.name.upper()
            if key in env:
                values[f.name] = _parse_env(f.name, env[key])
        return cls(**values)


def check_push_to(value: Any) -> str | None:
    """``push_to`` must be None or a remote's name (whether that remote exists is checked against a repository)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError("push_to", value, "must be the name of a remote (see `coral remote add`)")
    return value


def _finite(x: int | float) -> bool:
    """math.isfinite that says False (instead of raising) for ints too big to be a float."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _parse_env(name: str, raw: str) -> Any:
    text = raw.strip()
    if text.lower() in ("none", "null", ""):
        return None
    if name in _BOOLS:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, raw, "expected true/false")
    if name in ("save_on_best_metric", "commit_message_template", "min_free_space", "push_to"):
        return raw
    if name == "preemption_signals":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if name == "save_every_n_steps" and text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, raw, "expected a number") from None
