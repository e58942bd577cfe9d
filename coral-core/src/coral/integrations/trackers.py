"""Experiment trackers: a small protocol and an MLflow bridge that records each checkpoint's commit hash."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import InvalidArgumentError

log = logging.getLogger(__name__)


@runtime_checkable
class Tracker(Protocol):
    """What Coral calls on a tracker: start a run, log metrics and checkpoints, end the run.

    Implement these four methods to send Coral's runs anywhere (W&B, a database, a log file); pass the
    object as ``tracker=`` to ``Checkpointer`` or ``CoralTrainer``. ``status`` is ``"completed"`` or ``"failed"``.
    """

    def start_run(self, run_name: str | None = None, params: Mapping[str, Any] | None = None) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_checkpoint(
        self, commit_hash: str, step: int | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None: ...

    def end_run(self, status: str = "completed") -> None: ...


class MLflowBridge:
    """Log metrics, params and checkpoint commit hashes to MLflow (``pip install coral-core[mlflow]``).

    ``tracking_uri`` defaults to MLflow's own default (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
    MLflow 3). Each checkpoint sets the run tag ``coral.commit`` (the newest hash), the tag
    ``coral.commit.<step>`` and the metric ``coral.checkpoint`` (1.0 at that step).
    """

    _STATUS: ClassVar[dict[str, str]] = {"completed": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
    _PARAM_LIMIT = 6000

    def __init__(
        self, experiment_name: str = "coral", tracking_uri: str | None = None, run_name: str | None = None
    ) -> None:
        try:
            import mlflow
        except ImportError as exc:
            raise ImportError("MLflowBridge needs MLflow: pip install coral-core[mlflow]") from exc
        if not isinstance(experiment_name, str) or not experiment_name:
            raise InvalidArgumentError("experiment_name", experiment_name, "must be a non-empty string")
        self._mlflow = mlflow
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.run_id: str | None = None
        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` in use (to read runs back)."""
        return self._client

    def start_run(self, run_name: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        """Open a new run in the experiment (created when missing) and log ``params``."""
        exp = self._client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            exp_id = self._client.create_experiment(self.experiment_name)
        elif getattr(exp, "lifecycle_stage", "active") == "deleted":
            self._client.restore_experiment(exp.experiment_id)
            exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        run = self._client.create_run(exp_id, run_name=run_name or self.run_name)
        self.run_id = run.info.run_id
        if params:
            self.log_params(params)

    def _ensure(self) -> str:
        if self.run_id is None:
            self.start_run()
        assert self.run_id is not None
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log run parameters (values as strings; None skipped)."""
        from mlflow.entities import Param

        run = self._ensure()
        items = [Param(str(k), str(v)[: self._PARAM_LIMIT]) for k, v in params.items() if v is not None]
        if items:
            self._client.log_batch(run, params=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` in one batch; values that are not finite numbers are skipped."""
        from mlflow.entities import Metric

        run = self._ensure()
        now = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                log.debug("metric %r=%r is not a number; not sent to MLflow", k, v)
                continue
            if math.isfinite(f) and not isinstance(v, bool):
                items.append(Metric(str(k), f, now, int(step or 0)))
        if items:
            self._client.log_batch(run, metrics=items)

    def log_checkpoint(
        self, commit_hash: str, step: int | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Record a checkpoint's commit hash on the run (tags ``coral.commit`` and ``coral.commit.<step>``)."""
        from mlflow.entities import Metric, RunTag

        run = self._ensure()
        s = int(step or 0)
        tags = [RunTag("coral.commit", commit_hash), RunTag(f"coral.commit.{s}", commit_hash)]
        if metadata and metadata.get("epoch") is not None:
            tags.append(RunTag(f"coral.commit.{s}.epoch", str(metadata["epoch"])))
        self._client.log_batch(run, metrics=[Metric("coral.checkpoint", 1.0, int(time.time() * 1000), s)], tags=tags)

    def end_run(self, status: str = "completed") -> None:
        """Mark the run ``completed`` (FINISHED), ``failed`` (FAILED) or ``killed`` (KILLED)."""
        if status not in self._STATUS:
            raise InvalidArgumentError("status", status, f"must be one of {', '.join(self._STATUS)}")
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=self._STATUS[status])
