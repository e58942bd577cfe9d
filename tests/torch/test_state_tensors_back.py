"""Issue 28: what a TrainingState held comes back as it went in, and the guide's own random_state restores."""

from __future__ import annotations

import numpy as np
import torch
from coral import Repository
from coral.integrations.pytorch import PyTorchIntegration
from coral.training import CheckpointConfig, CheckpointManager, TrainingState


def _trained():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_optimizer_state_dict_comes_back_as_torch_tensors(tmp_path):
    model, opt, sched = _trained()
    manager = CheckpointManager(Repository(tmp_path / "r", init=True), CheckpointConfig(), experiment_name="e")
    state = TrainingState(epoch=1, global_step=3, optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict())
    manager.save_checkpoint(PyTorchIntegration.model_to_weights(model), state, force=True)

    loaded = manager.load_checkpoint()["state"]
    moments = loaded.optimizer_state["state"][0]
    assert torch.is_tensor(moments["exp_avg"]) and torch.is_tensor(moments["step"])
    assert torch.equal(moments["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    fresh_model, fresh_opt, fresh_sched = _trained()
    fresh_opt.load_state_dict(loaded.optimizer_state)  # the guide's restore, as written
    fresh_sched.load_state_dict(loaded.scheduler_state)
    for a, b in zip(fresh_opt.state_dict()["state"].values(), opt.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # numpy went in (PyTorchIntegration.save_optimizer_state): numpy comes out, as before
    state2 = TrainingState(epoch=2, global_step=4, optimizer_state=PyTorchIntegration.save_optimizer_state(opt))
    manager.save_checkpoint(PyTorchIntegration.model_to_weights(model), state2, force=True)
    again = manager.load_checkpoint()["state"].optimizer_state["state"][0]["exp_avg"]
    assert isinstance(again, np.ndarray)


def test_guide_random_state_dict_saved_and_restored(tmp_path):
    # section 6.4's dict, restored with section 6.9's call
    random_state = {
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all(),
        "numpy": np.random.get_state(),
    }
    want_torch, want_np = torch.rand(5), np.random.rand(5)
    manager = CheckpointManager(Repository(tmp_path / "r", init=True), CheckpointConfig(), experiment_name="e")
    state = TrainingState(epoch=1, global_step=1, random_state=random_state)
    manager.save_checkpoint({"w": np.zeros(3, np.float32)}, state, force=True)
    torch.rand(100), np.random.rand(100)

    loaded = manager.load_checkpoint()["state"]
    assert torch.is_tensor(loaded.random_state["torch"])
    torch.set_rng_state(loaded.random_state["torch"])  # the raw torch call works on what came back
    assert torch.equal(torch.rand(5), want_torch)
    torch.rand(7)
    PyTorchIntegration.set_random_state(loaded.random_state)
    assert torch.equal(torch.rand(5), want_torch) and np.array_equal(np.random.rand(5), want_np)
    # and the in-memory dict itself (tuple numpy state, torch tensors) restores too
    PyTorchIntegration.set_random_state(random_state)
    assert torch.equal(torch.rand(5), want_torch) and np.array_equal(np.random.rand(5), want_np)
