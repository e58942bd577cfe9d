"""TrainingState: fields, summary line, JSON save/load with arrays kept exact and never as JSON lists."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from coral.errors import InvalidArgumentError
from coral.training import TrainingState


def test_format_summary_matches_documented_line():
    state = TrainingState(epoch=10, global_step=5000, learning_rate=0.0001, loss=0.234, metrics={"accuracy": 0.96})
    assert state.format_summary() == (
        "Epoch: 10 | Step: 5000 | Learning Rate: 1.00e-04 | Loss: 0.2340 | accuracy: 0.9600"
    )


def test_update_metrics_merges():
    state = TrainingState(metrics={"a": 1.0})
    state.update_metrics(b=2.0, a=3.0)
    assert state.metrics == {"a": 3.0, "b": 2.0}


def test_save_load_roundtrip_keeps_arrays_exact_and_not_as_lists(tmp_path):
    moments = np.array([np.nan, -0.0, np.inf, 1.5], dtype=np.float32)
    moments.view(np.uint32)[0] = 0x7FC00123  # a NaN payload
    bf16 = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3)
    state = TrainingState(
        epoch=3, global_step=30, learning_rate=1e-3, loss=0.5, metrics={"acc": 0.9, "nan_metric": float("nan")},
        optimizer_state={
            "state": {0: {"exp_avg": moments, "step": np.array(7.0, dtype=np.float32)}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        },
        scheduler_state={"last_epoch": 3, "base_lrs": [0.001]},
        random_state={"numpy": {"keys": np.arange(4, dtype=np.uint32)}},
        data_state={"position": 12, "bf16": bf16},
        batch_size=32, gradient_accumulation_steps=2, max_epochs=10, max_steps=100,
        model_name="m", dataset_name="d", experiment_name="e", notes="n",
    )
    path = tmp_path / "state.json"
    state.save(path)
    raw = path.read_text()
    assert "exp_avg" in raw and "[0.0, 1.0" not in raw  # arrays are not JSON lists
    json.loads(raw)  # strict JSON (no NaN literals)
    back = TrainingState.load(path)
    got = back.optimizer_state["state"][0]["exp_avg"]
    assert got.dtype == np.float32 and got.tobytes() == moments.tobytes()
    assert back.optimizer_state["state"][0]["step"].shape == ()
    assert 0 in back.optimizer_state["state"]  # int keys come back as ints
    assert back.data_state["bf16"].dtype == bf16.dtype and back.data_state["bf16"].tobytes() == bf16.tobytes()
    assert np.isnan(back.metrics["nan_metric"])
    assert (back.epoch, back.global_step, back.batch_size, back.notes) == (3, 30, 32, "n")


def test_to_dict_from_dict_roundtrip():
    state = TrainingState(epoch=1, global_step=2, metrics={"x": 1})
    assert TrainingState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize("field,value", [("epoch", -1), ("global_step", "ten"), ("epoch", 1.5), ("metrics", [1, 2])])
def test_bad_fields_raise_naming_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        TrainingState(**{field: value})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(InvalidArgumentError, match="unknown"):
        TrainingState.from_dict({"epoch": 1, "bogus": 2})


def test_load_of_a_non_state_file_is_a_clear_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("not json")
    with pytest.raises(InvalidArgumentError, match="path"):
        TrainingState.load(p)


def test_concurrent_saves_to_one_path_both_succeed_and_leave_one_whole_state(tmp_path):
    """Two savers of one path never share a temp file: both succeed, and the file is one of the two states."""
    import threading

    path = tmp_path / "state.json"
    states = [
        TrainingState(epoch=i, global_step=i * 10, optimizer_state={"m": np.full(50_000, i, np.float32)})
        for i in (1, 2)
    ]
    for _round in range(10):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def save(state: TrainingState, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            try:
                barrier.wait()
                state.save(path)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(s, barrier, errors)) for s in states]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        back = TrainingState.load(path)
        assert back.epoch in (1, 2)
        assert back.global_step == back.epoch * 10
        assert back.optimizer_state["m"].tobytes() == np.full(50_000, back.epoch, np.float32).tobytes()
        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_a_failed_save_keeps_the_earlier_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import os

    path = tmp_path / "state.json"
    TrainingState(epoch=1).save(path)
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="space"):
        TrainingState(epoch=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
