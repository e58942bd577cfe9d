"""Experiment trackers: a small protocol and an MLflow bridge that records each checkpoint's commit hash."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from ..errors import InvalidArgumentError


@runtime_checkable
class Tracker(Protocol):
    """What Coral calls on a tracker: start a run, log params/metrics/checkpoints, end the run."""

    def start_run(self, run_name: str | None = None, params: Mapping[str, Any] | None = None) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_checkpoint(self, commit_hash: str, step: int | None = None, metadata: Mapping[str, Any] | None = None) -> None: ...

    def end_run(self, status: str = "completed") -> None: ...


class MLflowBridge:
    """Log metrics, params and checkpoint commit hashes to MLflow (``pip install coral-core[mlflow]``).

    ``tracking_uri`` defaults to MLflow's own default (``MLFLOW_TRACKING_URI`` or ``./mlruns``).
    """

    _STATUS = {"completed": "FINISHED", "failed": "FAILED", "killed": "KILLED"}

    def __init__(self, experiment_name: str = "coral", tracking_uri: str | None = None, run_name: str | None = None) -> None:
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

    def start_run(self, run_name: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        exp = self._client.get_experiment_by_name(self.experiment_name)
        exp_id = exp.experiment_id if exp is not None else self._client.create_experiment(self.experiment_name)
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
        run = self._ensure()
        for k, v in params.items():
            self._client.log_param(run, k, str(v)[:500])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        run = self._ensure()
        for k, v in metrics.items():
            try:
                self._client.log_metric(run, k, float(v), step=step or 0)
            except (TypeError, ValueError):
                continue

    def log_checkpoint(self, commit_hash: str, step: int | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        run = self._ensure()
        self._client.set_tag(run, "coral.last_commit", commit_hash)
        self._client.log_metric(run, "coral.checkpoints", 1.0, step=step or 0)
        self._client.set_tag(run, f"coral.commit.{step or 0}", commit_hash)

    def end_run(self, status: str = "completed") -> None:
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=self._STATUS.get(status, "FINISHED"))
