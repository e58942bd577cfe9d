"""Async saves of Checkpointer: the lazy snapshot (copied in the background, step gated) and the copying one.

Every test checks bits: the commit equals the state at the moment ``save`` was called, whatever the loop did
right after. The background copy is held back (a wrapper that waits on an event around the real copy) where a
test needs the race to go one way; nothing else is replaced.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from coral.errors import CheckpointError, InvalidArgumentError, SnapshotChangedError
from coral.integrations.pytorch import Checkpointer
from coral.training import CheckpointConfig, CheckpointManager, TrainingState
from coral.training.snapshot import HostSnapshot
from torch import nn


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 4))
    return model, torch.optim.AdamW(model.parameters(), lr=0.05)


def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.randn(8, 16)).pow(2).mean().backward()
    opt.step()


def snapshot_of(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, bytes]:
    """Every model tensor and every optimizer state tensor, as bytes, under the names a checkpoint uses."""
    out = {k: v.detach().clone().numpy().tobytes() for k, v in model.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                out[f"optim/state/{pid}/{key}"] = v.detach().clone().numpy().tobytes()
    return out


def committed(ckpt: Checkpointer, commit: str) -> dict[str, bytes]:
    return {n: np.ascontiguousarray(w.data).tobytes() for n, w in ckpt.repo.get_weights(commit).items()}


class HeldCopy:
    """Holds every background copy until ``release()``: the loop then surely runs while the copy is pending."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        real = HostSnapshot.copy

        def held(snap, items, guard=None):
            if guard is not None:  # only the lazy (background) copy is held; the copying snapshot runs in save()
                self.gate.wait(30)
            return real(snap, items, guard)

        monkeypatch.setattr(HostSnapshot, "copy", held)

    def release(self) -> None:
        self.gate.set()


@pytest.mark.parametrize("held", [False, True])
def test_lazy_snapshot_commits_the_state_at_save_while_training_goes_on(tmp_path, monkeypatch, held):
    model, opt = setup()
    hold = HeldCopy(monkeypatch) if held else None
    ckpt = Checkpointer(model, tmp_path / "r", "lazy", optimizer=opt, every_n_steps=1000, async_save=True)
    assert ckpt.snapshot == "lazy"
    for _ in range(3):
        step(model, opt)
    expected = snapshot_of(model, opt)
    assert ckpt.save(0, step=3) is None  # async: the hash lands once written
    if hold is not None:
        threading.Timer(0.2, hold.release).start()  # the step below must wait for the copy
    for _ in range(5):  # keep training right after the call: weights and moments change at every step
        step(model, opt)
        assert ckpt.manager.wait_snapshot(timeout=0)  # step() returned: the copy was out before it wrote
    ckpt.close()
    commit = ckpt.last_commit
    assert commit is not None
    got = committed(ckpt, commit)
    for name, raw in expected.items():
        assert got[name] == raw, name
    assert snapshot_of(model, opt)["0.weight"] != expected["0.weight"]  # the loop did change them


def test_lazy_snapshot_refuses_a_write_outside_step(tmp_path, monkeypatch):
    model, opt = setup()
    hold = HeldCopy(monkeypatch)
    ckpt = Checkpointer(model, tmp_path / "r", "lazy", optimizer=opt, every_n_steps=1000, async_save=True)
    step(model, opt)
    ckpt.save(0, step=1)
    with torch.no_grad():
        model[0].weight.mul_(0.5)  # an EMA-like write outside step(), before the copy was made
    hold.release()
    with pytest.raises(CheckpointError, match=r"'0\.weight'.*snapshot='copy'") as err:
        ckpt.manager.wait()
    assert isinstance(err.value.__cause__, SnapshotChangedError)
    assert ckpt.last_commit is None  # nothing half-right was committed
    ckpt.close()


def test_copy_snapshot_keeps_the_state_at_save_under_writes_outside_step(tmp_path):
    model, opt = setup()
    ckpt = Checkpointer(
        model, tmp_path / "r", "copy", optimizer=opt, every_n_steps=1000, async_save=True, snapshot="copy"
    )
    step(model, opt)
    expected = snapshot_of(model, opt)
    ckpt.save(0, step=1)
    with torch.no_grad():  # writes outside step(), through the tensor and through .data
        model[0].weight.mul_(0.5)
        model[3].bias.data.fill_(7.0)
    step(model, opt)
    ckpt.close()
    got = committed(ckpt, ckpt.last_commit)
    for name, raw in expected.items():
        assert got[name] == raw, name


def test_buffers_are_copied_at_save_in_lazy_mode(tmp_path, monkeypatch):
    """BatchNorm running statistics change in forward, not in step: the lazy snapshot copies them at once."""
    model, opt = setup()
    hold = HeldCopy(monkeypatch)
    ckpt = Checkpointer(model, tmp_path / "r", "bn", optimizer=opt, every_n_steps=1000, async_save=True)
    step(model, opt)
    expected = snapshot_of(model, opt)["1.running_mean"]
    ckpt.save(0, step=1)
    model(torch.randn(8, 16) + 3.0)  # a forward in train mode moves the running mean; no step yet
    hold.release()
    ckpt.close()
    assert committed(ckpt, ckpt.last_commit)["1.running_mean"] == expected


def test_second_save_waits_or_skips_with_a_warning(tmp_path, monkeypatch, caplog):
    model, opt = setup()
    hold = HeldCopy(monkeypatch)
    cfg = CheckpointConfig(save_every_n_steps=1, async_save=True, skip_save_if_busy=True)
    ckpt = Checkpointer(model, tmp_path / "r", "busy", optimizer=opt, config=cfg)
    step(model, opt)
    ckpt.log(0, 1)
    with caplog.at_level(logging.WARNING):
        assert ckpt.log(0, 2) is None  # the first is still in flight: skipped, the loop does not wait
    assert "skipped" in caplog.text
    hold.release()
    ckpt.close()
    assert [h["global_step"] for h in ckpt.manager.checkpoint_history] == [1]


def test_manager_waits_for_the_save_in_flight_by_default(tmp_path):
    from coral import Repository

    repo = Repository(tmp_path / "m", init=True)
    m = CheckpointManager(repo, CheckpointConfig(save_every_n_steps=1, async_save=True), experiment_name="w")
    for s in (1, 2, 3):
        m.save_checkpoint({"w": np.full(1000, s, np.float32)}, TrainingState(global_step=s))
    m.wait()
    assert [h["global_step"] for h in m.checkpoint_history] == [1, 2, 3]
    assert not m.save_in_flight


def test_snapshot_argument_is_checked(tmp_path):
    model, opt = setup()
    with pytest.raises(InvalidArgumentError, match="snapshot"):
        Checkpointer(model, tmp_path / "r", "x", optimizer=opt, async_save=True, snapshot="cow")
    with pytest.raises(InvalidArgumentError, match="async_save"):
        Checkpointer(model, tmp_path / "r", "x", optimizer=opt, async_save="yes")


def test_step_gate_is_removed_at_close(tmp_path):
    model, opt = setup()
    ckpt = Checkpointer(model, tmp_path / "r", "g", optimizer=opt, async_save=True)
    assert len(opt._optimizer_step_pre_hooks) == 1
    ckpt.close()
    assert len(opt._optimizer_step_pre_hooks) == 0


def test_readme_async_block_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "async_save=True)\n..." in b]
    monkeypatch.chdir(tmp_path)
    model, optimizer = setup()
    ns = {"model": model, "optimizer": optimizer, "epoch": 0, "step": 20, "Checkpointer": Checkpointer, "torch": torch}
    exec(code.replace("...", "model(torch.randn(8, 16)).pow(2).mean().backward()"), ns)  # noqa: S102
    ns["ckpt"].close()
    assert ns["ckpt"].last_commit is not None
