"""One-off save()/load(): results, strictness, checkpoint commits, any device to CPU, no unpickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from coral import Repository
from coral.errors import InvalidArgumentError, RepositoryNotFoundError, ShapeMismatchError
from coral.integrations.pytorch import Checkpointer, load, save
from torch import nn


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))


def test_save_then_load_head_and_by_commit(tmp_path):
    a = net(0)
    a(torch.randn(4, 3))  # running stats move
    first = save(a, tmp_path / "repo", "first")
    assert set(first) == {"commit_hash", "weights_saved"}
    assert first["weights_saved"] == len(a.state_dict()) == 9
    with torch.no_grad():
        a[0].weight.mul_(2)
    second = save(a, Repository(tmp_path / "repo"), "second")
    b = net(1)
    res = load(b, tmp_path / "repo", commit=first["commit_hash"][:10])
    assert res["matched"] is True and res["missing"] == [] and res["unexpected"] == []
    assert sorted(res["loaded"]) == sorted(a.state_dict())
    assert torch.equal(b[0].weight, a[0].weight / 2) and torch.equal(b[1].running_mean, a[1].running_mean)
    load(b, tmp_path / "repo")  # HEAD
    assert torch.equal(b[0].weight, a[0].weight)
    assert Repository(tmp_path / "repo").log()[0].hash == second["commit_hash"]


def test_load_non_strict_reports_and_strict_raises(tmp_path):
    save(nn.Sequential(nn.Linear(3, 5)), tmp_path / "r", "small")
    bigger = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 1))
    res = load(bigger, tmp_path / "r", strict=False)
    assert res["matched"] is False and res["missing"] == ["1.bias", "1.weight"] and len(res["loaded"]) == 2
    with pytest.raises(InvalidArgumentError, match=r"1\.bias"):
        load(bigger, tmp_path / "r", strict=True)
    with pytest.raises(ShapeMismatchError, match=r"'0\.bias'.*\(5,\).*\(4,\).*'0\.weight'.*\(5, 3\).*\(4, 3\)"):
        load(nn.Sequential(nn.Linear(3, 4)), tmp_path / "r", strict=False)
    with pytest.raises(RepositoryNotFoundError):
        load(bigger, tmp_path / "missing")


def test_load_a_training_checkpoint_skips_optimizer_and_rng_tensors(tmp_path):
    model = net()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    with Checkpointer(model, tmp_path / "r", "exp", optimizer=opt) as ckpt:
        h = ckpt.log(0, 1, loss=0.1)
    tree = Repository(tmp_path / "r").get_commit(h).tree
    assert any(n.startswith("optim/") for n in tree) and any(n.startswith("rng/") for n in tree)
    other = net(3)
    res = load(other, tmp_path / "r", commit=h, strict=True)
    assert res["matched"] and not any("/" in n for n in res["loaded"])
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_weights_committed_as_plain_arrays_load_to_cpu(tmp_path):
    # what a checkpoint written on another device holds: device-free arrays (Coral never stores a device)
    repo = Repository(tmp_path / "r", init=True)
    w = np.arange(15, dtype=np.float32).reshape(5, 3)
    repo.stage_weights({"weight": w, "bias": np.zeros(5, dtype=np.float32)})
    cid = repo.commit("arrays")
    lin = nn.Linear(3, 5)
    load(lin, repo, commit=cid)
    assert lin.weight.device.type == "cpu" and np.array_equal(lin.weight.detach().numpy(), w)


def test_load_never_unpickles(tmp_path, monkeypatch):
    save(net(), tmp_path / "r", "m")

    def forbidden(*a, **k):
        raise AssertionError("unpickling on a load path")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load(net(1), tmp_path / "r")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_weights_and_optimizer_state_load_onto_cpu_and_back(tmp_path):
    gpu = net().cuda()
    opt = torch.optim.Adam(gpu.parameters())
    gpu(torch.randn(4, 3, device="cuda")).sum().backward()
    opt.step()
    with Checkpointer(gpu, tmp_path / "r", "g", optimizer=opt) as ckpt:
        ckpt.log(0, 1)
    cpu = net(1)
    cpu_opt = torch.optim.Adam(cpu.parameters())
    Checkpointer(cpu, tmp_path / "r", "g", optimizer=cpu_opt, resume=True)
    for k, v in gpu.state_dict().items():
        assert torch.equal(cpu.state_dict()[k], v.cpu())
    assert cpu_opt.state_dict()["state"][0]["exp_avg"].device.type == "cpu"
    back = net(2).cuda()
    load(back, tmp_path / "r")
    assert torch.equal(back[0].weight, gpu[0].weight)
