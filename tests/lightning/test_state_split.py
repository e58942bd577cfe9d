"""Lightning checkpoint dict -> Coral commit -> the same dict: bits, dtypes, tuples and int keys survive."""

from __future__ import annotations

import math

import numpy as np
import torch
from coral import Repository
from coral.training import CheckpointManager, TrainingState
from coral_lightning._state import attach, build_checkpoint, detach, split_checkpoint


def _checkpoint() -> dict:
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {
            "layer.weight": torch.randn(3, 2, dtype=torch.bfloat16),
            "layer.bias": torch.tensor([1.0, -0.0, float("nan")]),
            "bn.num_batches_tracked": torch.tensor(7),
        },
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3, "completed": 2}}, "state_dict": {}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}": {
                "best_model_score": torch.tensor(0.25, dtype=torch.float64),
                "best_k_models": {"/tmp/../x/epoch=1.ckpt": torch.tensor(0.5)},
                "kth_value": torch.tensor(float("inf")),
            },
        },
        "optimizer_states": [
            {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(3, 2)}},
             "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0], "foreach": None}]},
        ],
        "lr_schedulers": [{"last_epoch": 3, "_last_lr": [0.05], "mode_worse": float("inf")}],
        "hyper_parameters": {"lr": 0.1, "layers": (3, 2), "path": __import__("pathlib").Path("/data")},
        "hparams_name": "kwargs",
        "user_extra": {"raw": b"\x00\x01", "arr": np.arange(3, dtype=np.int16), 5: "int key", "t": (1, "a")},
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and (
            a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8)
        ).tolist() == (b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8)).tolist()
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


def test_detach_attach_round_trip() -> None:
    value = _checkpoint()
    tensors: dict = {}
    skeleton = detach(value, tensors)
    assert all(isinstance(a, np.ndarray) for a in tensors.values())
    back = attach(skeleton, tensors)
    assert back["hyper_parameters"].pop("path") == "PosixPath('/data')"  # not JSON, not a tensor: its repr
    value["hyper_parameters"].pop("path")
    assert _equal(back, value)


def test_commit_round_trip_is_exact(tmp_path) -> None:
    ckpt = _checkpoint()
    parts = split_checkpoint(ckpt, include_optimizer=True)
    assert set(parts.weights) == set(ckpt["state_dict"])
    assert parts.metadata["hparams"] == {"lr": 0.1, "layers": [3, 2], "path": "/data"}
    repo = Repository(tmp_path / "r", init=True)
    manager = CheckpointManager(repo, experiment_name="t")
    state = TrainingState(epoch=3, global_step=120, optimizer_state=parts.optimizer_state,
                          scheduler_state=parts.scheduler_state, data_state=parts.data_state)
    h = manager.save_checkpoint(
        parts.weights, state, force=True, metadata={**parts.metadata, "lightning": {"format": 1}}
    )
    back = build_checkpoint(repo, h)
    assert back.pop("coral")["commit"] == h
    assert back.pop("hyper_parameters") == parts.metadata["hparams"]  # display copy: JSON values
    want = {k: v for k, v in ckpt.items() if k != "hyper_parameters"}
    assert _equal(back, want)
    names = repo.get_commit(h).tree
    assert "optim/0/state/0/exp_avg" in names and any(n.startswith("data/lightning/tensors/") for n in names)


def test_without_optimizer_the_states_are_left_out() -> None:
    parts = split_checkpoint(_checkpoint(), include_optimizer=False)
    assert parts.optimizer_state is None and parts.scheduler_state is None
