"""MLflowBridge against a real MLflow tracking store (sqlite), read back with MlflowClient."""

from __future__ import annotations

import sys

import pytest
import torch
from coral.errors import InvalidArgumentError
from coral.integrations import MLflowBridge, Tracker
from coral.integrations.pytorch import Checkpointer, CoralTrainer
from coral.training import CheckpointConfig
from torch import nn

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    # one store per module (MLflow builds its sqlite schema on first use, which takes seconds)
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def run_of(bridge: MLflowBridge):
    return mlflow.MlflowClient(tracking_uri=bridge.tracking_uri).get_run(bridge.run_id)


def test_checkpointer_logs_metrics_params_and_each_commit(tmp_path, tracking_uri):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bridge = MLflowBridge(experiment_name="coral-ok", tracking_uri=tracking_uri)
    assert isinstance(bridge, Tracker)
    commits = {}
    with Checkpointer(model, tmp_path / "r", "exp-ok", optimizer=opt, on_best="val_loss", tracker=bridge) as ckpt:
        for epoch, v in enumerate([0.9, 0.95, 0.5]):
            h = ckpt.log(epoch, (epoch + 1) * 5, loss=1.0 / (epoch + 1), val_loss=v)
            if h:
                commits[(epoch + 1) * 5] = h
    assert sorted(commits) == [5, 15]
    run = run_of(bridge)
    assert run.info.status == "FINISHED"
    assert run.data.params["coral.experiment"] == "exp-ok" and run.data.params["on_best"] == "val_loss"
    assert run.data.params["optimizer"] == "SGD"
    assert run.data.tags["coral.commit"] == ckpt.last_commit == commits[15]
    assert {s: run.data.tags[f"coral.commit.{s}"] for s in commits} == commits
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    history = client.get_metric_history(bridge.run_id, "val_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(5, 0.9), (10, 0.95), (15, 0.5)]
    assert sorted(m.step for m in client.get_metric_history(bridge.run_id, "coral.checkpoint")) == [5, 15]


def test_failed_block_marks_the_run_failed(tmp_path, tracking_uri):
    bridge = MLflowBridge(experiment_name="coral-bad", tracking_uri=tracking_uri, run_name="bad-run")
    with (
        pytest.raises(ValueError, match="boom"),
        Checkpointer(nn.Linear(2, 2), tmp_path / "r", "exp-bad", tracker=bridge) as ckpt,
    ):
        ckpt.log(0, 1, loss=float("nan"), accuracy=0.5)
        raise ValueError("boom")
    run = run_of(bridge)
    assert run.info.status == "FAILED" and run.info.run_name == "exp-bad"
    assert run.data.metrics == {"accuracy": 0.5, "coral.checkpoint": 1.0}  # NaN is not sent


def test_coral_trainer_reports_steps_and_checkpoints(tmp_path, tracking_uri):
    model = nn.Linear(3, 1)
    bridge = MLflowBridge(experiment_name="coral-trainer", tracking_uri=tracking_uri)
    trainer = CoralTrainer(model, tmp_path / "r", "t", CheckpointConfig(save_every_n_epochs=1), tracker=bridge)
    for step in range(3):
        trainer.step(loss=0.5 - step * 0.1)
    h = trainer.epoch_end(0)
    trainer.close()
    run = run_of(bridge)
    assert run.info.status == "FINISHED" and run.data.tags["coral.commit"] == h
    steps = mlflow.MlflowClient(tracking_uri=tracking_uri).get_metric_history(bridge.run_id, "loss")
    assert sorted(m.step for m in steps) == [1, 2, 3]


def test_bridge_validates_and_names_the_missing_extra(monkeypatch, tracking_uri):
    with pytest.raises(InvalidArgumentError):
        MLflowBridge(experiment_name="")
    bridge = MLflowBridge(experiment_name="coral-misc", tracking_uri=tracking_uri)
    bridge.start_run(params={"lr": 0.1, "skip": None})
    bridge.log_metrics({"ok": 1, "text": "x", "inf": float("inf"), "flag": True}, step=2)
    with pytest.raises(InvalidArgumentError):
        bridge.end_run("weird")
    bridge.end_run("killed")
    run = run_of(bridge)
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"ok": 1.0} and run.info.status == "KILLED"
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"coral-core\[mlflow\]"):
        MLflowBridge(experiment_name="x")
