"""PyTorchIntegration and the torch hookimpls: exact bits, every buffer, clear errors on mismatch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from coral import Repository
from coral.errors import InvalidArgumentError, ShapeMismatchError
from coral.plugins import hook
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
from coral_torch import PyTorchIntegration as P
from coral_torch import numpy_to_tensor, tensor_to_numpy
from torch import nn


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 2))


def trained(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 3, dtype: torch.dtype = torch.float32) -> None:
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 4, dtype=dtype)).float().pow(2).mean().backward()
        opt.step()


def same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, x in a.items():
        assert x.dtype == b[k].dtype, k
        assert torch.equal(x, b[k]), k


def test_model_to_weights_is_the_full_state_dict_with_buffers_and_layer_types():
    model = bn_model()
    model(torch.randn(8, 4))  # moves the running stats away from their init
    weights = P.model_to_weights(model)
    assert set(weights) == set(model.state_dict())
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(weights)
    assert weights["1.num_batches_tracked"].dtype == np.int64
    assert weights["0.weight"].shape == (6, 4)
    assert weights["0.weight"].metadata.layer_type == "Linear"
    assert weights["1.running_mean"].metadata.layer_type == "BatchNorm1d"
    for name, t in model.state_dict().items():
        assert np.array_equal(weights[name].data, t.numpy()), name


def test_bf16_stays_bf16_bit_for_bit_through_a_repository(tmp_path):
    model = bn_model().to(torch.bfloat16)
    weights = P.model_to_weights(model)
    assert str(weights["0.weight"].dtype) == "bfloat16"
    repo = Repository(tmp_path, init=True)
    repo.stage_weights(weights)
    cid = repo.commit("bf16")
    fresh = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 2))
    fresh = fresh.to(torch.bfloat16)
    P.weights_to_model(repo.get_weights(cid), fresh, strict=True)
    for name, t in model.state_dict().items():
        u = fresh.state_dict()[name]
        assert u.dtype == t.dtype
        assert t.view(torch.int16).equal(u.view(torch.int16)) if t.dtype == torch.bfloat16 else t.equal(u)


def test_model_to_weights_snapshots_unless_copy_false():
    model = nn.Linear(3, 2)
    snap = P.model_to_weights(model)
    shared = P.model_to_weights(model, copy=False)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert np.array_equal(snap["weight"].data, before.numpy())
    assert np.array_equal(shared["weight"].data, model.weight.detach().numpy())


def test_weights_to_model_defaults_to_non_strict_and_reports_keys():
    src = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    dst = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(2, 2))
    weights = P.model_to_weights(src)
    weights["extra.weight"] = np.zeros(3, dtype=np.float32)
    out = P.weights_to_model(weights, dst)
    assert sorted(out["loaded"]) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert out["missing"] == ["2.bias", "2.weight"]
    assert out["unexpected"] == ["extra.weight"]
    assert torch.equal(dst[0].weight, src[0].weight)


def test_strict_names_missing_and_unexpected_keys():
    weights = P.model_to_weights(nn.Linear(4, 2))
    weights["stray"] = np.ones(1, dtype=np.float32)
    with pytest.raises(InvalidArgumentError) as e:
        P.weights_to_model(weights, nn.Sequential(nn.Linear(4, 2)), strict=True)
    msg = str(e.value)
    assert "0.weight" in msg and "stray" in msg and "missing" in msg and "unexpected" in msg


def test_shape_mismatch_names_tensor_and_both_shapes_and_loads_nothing():
    src = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    dst = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    before = dst[0].weight.detach().clone()
    with pytest.raises(ShapeMismatchError) as e:
        P.weights_to_model(P.model_to_weights(src), dst, strict=False)
    msg = str(e.value)
    assert "1.weight" in msg and "(3, 6)" in msg and "(2, 6)" in msg
    assert torch.equal(dst[0].weight, before), "nothing may be copied before the check fails"


def test_dtype_cast_to_the_model_and_meta_models_are_materialized():
    src = nn.Linear(4, 3).to(torch.bfloat16)
    dst = nn.Linear(4, 3)  # float32
    P.weights_to_model(P.model_to_weights(src), dst, strict=True)
    assert dst.weight.dtype == torch.float32
    assert torch.equal(dst.weight, src.weight.float())

    with torch.device("meta"):
        lazy = nn.Linear(4, 3)
    assert lazy.weight.is_meta
    P.weights_to_model(P.model_to_weights(nn.Linear(4, 3).requires_grad_(True)), lazy, strict=True)
    assert not lazy.weight.is_meta and lazy.weight.device.type == "cpu"
    assert isinstance(lazy.weight, nn.Parameter) and lazy.weight.requires_grad
    with pytest.raises(InvalidArgumentError, match="meta"):
        P.model_to_weights(nn.Linear(2, 2, device="meta"))


def test_optimizer_state_round_trips_through_a_checkpoint_commit(tmp_path):
    model = bn_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    trained(model, opt)
    mgr = CheckpointManager(Repository(tmp_path, init=True), CheckpointConfig(), experiment_name="opt")
    mgr.save_checkpoint(
        P.model_to_weights(model), TrainingState(optimizer_state=P.save_optimizer_state(opt)), force=True
    )
    loaded = mgr.load_checkpoint()["state"].optimizer_state
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    P.load_optimizer_state(opt2, loaded)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            x, y = a["state"][i][k], b["state"][i][k]
            assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y), (i, k)
    # the moments live in the commit tree as tensors, not in JSON
    tree = Repository(tmp_path).get_commit().tree
    assert any(n.startswith("optim/state/0/exp_avg") for n in tree)


def test_save_optimizer_state_is_a_snapshot():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trained_ = torch.randn(4, 3)
    model(trained_).sum().backward()
    opt.step()
    state = P.save_optimizer_state(opt)
    buf = state["state"][0]["momentum_buffer"].copy()
    model(trained_).sum().backward()
    opt.step()
    assert np.array_equal(state["state"][0]["momentum_buffer"], buf)
    with pytest.raises(InvalidArgumentError):
        P.save_optimizer_state(object())


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20),
    ],
)
def test_scheduler_state_round_trips_through_a_commit(tmp_path, make):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = make(opt)
    for i in range(3):
        opt.step()
        sched.step(1.0 / (i + 1)) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()
    mgr = CheckpointManager(Repository(tmp_path, init=True), CheckpointConfig(), experiment_name="s")
    mgr.save_checkpoint(
        P.model_to_weights(model), TrainingState(scheduler_state=P.save_scheduler_state(sched)), force=True
    )
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched2 = make(opt2)
    P.load_scheduler_state(sched2, mgr.load_checkpoint()["state"].scheduler_state)
    assert sched2.state_dict() == sched.state_dict()


def test_random_state_covers_python_numpy_torch_and_restores_all():
    state = P.get_random_state()
    assert {"python", "numpy", "torch", "torch_cuda"} <= set(state)
    assert state["torch_cuda"] is None or isinstance(state["torch_cuda"], list)
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)
    P.set_random_state(state)
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_hooks_capture_and_restore_through_the_plugin_manager():
    model = bn_model()
    weights = hook().coral_model_to_weights(model=model)
    assert set(weights) == set(model.state_dict())
    other = bn_model()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    out = hook().coral_weights_to_model(weights=weights, model=other, strict=True)
    assert out["missing"] == [] and out["unexpected"] == []
    same_state(model.state_dict(), other.state_dict())
    opt = torch.optim.Adam(model.parameters())
    trained(model, opt, 1)
    assert hook().coral_get_optimizer_state(optimizer=opt)["state"]
    assert hook().coral_get_optimizer_state(optimizer=object()) is None
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    assert hook().coral_get_scheduler_state(scheduler=sched)["step_size"] == 3
    parts = [p for p in hook().coral_get_rng_state() if p]
    assert any("torch" in p for p in parts)
    merged = {k: v for p in parts for k, v in p.items()}
    hook().coral_set_rng_state(state=merged)
    a = torch.rand(4)
    hook().coral_set_rng_state(state=merged)
    assert torch.equal(torch.rand(4), a)
    assert np.array_equal(hook().coral_tensor_to_array(value=torch.arange(3)), np.arange(3))


def test_convert_keeps_zero_d_shape_and_bits():
    for t in (torch.tensor(3.5), torch.tensor(7, dtype=torch.int64), torch.tensor(1.25, dtype=torch.bfloat16)):
        a = tensor_to_numpy(t)
        back = numpy_to_tensor(a)
        assert back.shape == t.shape == ()
        assert back.dtype == t.dtype and torch.equal(back, t)
    ro = np.arange(4, dtype=np.float32)
    ro.setflags(write=False)
    assert numpy_to_tensor(ro).tolist() == [0, 1, 2, 3]
    strided = np.arange(10, dtype=np.float32)[::2]
    assert numpy_to_tensor(strided).tolist() == [0, 2, 4, 6, 8]
