"""The resume path: what a fresh process imports, the batched read of a checkpoint, and the in-place copy into
the model (bit-exact for every dtype, falling back to ``Tensor.copy_`` where a plain memcpy does not apply)."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from coral import Repository
from coral.errors import CorruptObjectError
from coral.training import CheckpointManager, TrainingState
from coral.training.layout import load_checkpoint_commit
from coral_torch import PyTorchIntegration
from coral_torch.integration import copy_in_place

RESUME_IMPORTS = """
import json, sys
import torch
from coral.integrations.pytorch import Checkpointer
model = torch.nn.Linear(4, 3)
opt = torch.optim.AdamW(model.parameters())
ckpt = Checkpointer(model, sys.argv[1], "exp", optimizer=opt, resume=True)
print(json.dumps({
    "resumed": ckpt.resumed_from,
    "ml_dtypes": "ml_dtypes" in sys.modules,
    "dcp": "torch.distributed.checkpoint" in sys.modules,
    "weight": model.weight.detach().numpy().tolist(),
}))
"""


def test_a_fresh_process_resumes_without_ml_dtypes_or_dcp(tmp_path):
    """Importing ml_dtypes costs ~0.5 s of CPU and torch.distributed.checkpoint seconds when cold: a resume of an
    fp32 model through the documented API needs neither."""
    from coral.integrations.pytorch import Checkpointer

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ckpt = Checkpointer(model, tmp_path / "repo", "exp", optimizer=opt)
    saved = ckpt.save(epoch=0)
    ckpt.close()
    out = subprocess.run(
        [sys.executable, "-c", RESUME_IMPORTS, str(tmp_path / "repo")], capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["resumed"] == saved
    assert doc["ml_dtypes"] is False and doc["dcp"] is False
    assert np.array_equal(np.array(doc["weight"], dtype=np.float32), model.weight.detach().numpy())


def test_integration_shim_still_exports_everything_lazily():
    import coral.integrations.pytorch as shim
    import coral_torch

    assert shim.__all__ == sorted(coral_torch.__all__)
    assert set(dir(shim)) >= set(coral_torch.__all__)
    assert shim.Checkpointer is coral_torch.Checkpointer
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        shim.nope  # noqa: B018


def test_bfloat16_still_round_trips_once_ml_dtypes_loads_lazily(tmp_path):
    repo = Repository(tmp_path / "r", init=True)
    w = torch.randn(3, 5).to(torch.bfloat16)
    repo.stage_weights(PyTorchIntegration.model_to_weights(_holder(w)))
    commit = repo.commit("bf16")
    back = repo.load_arrays(commit)["w"]
    assert back.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.array_equal(back.view(np.uint16), w.view(torch.int16).numpy().view(np.uint16))


def _holder(w: torch.Tensor) -> torch.nn.Module:
    m = torch.nn.Module()
    m.register_buffer("w", w)
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool,
                                   torch.complex64, torch.float64])
def test_copy_in_place_is_bit_exact(dtype):
    g = torch.Generator().manual_seed(0)
    src = (torch.randn(7, 5, generator=g) * 100).to(dtype)
    target = torch.zeros(7, 5, dtype=dtype)
    assert copy_in_place(target, src)
    assert torch.equal(target.view(-1).view(torch.uint8), src.view(-1).view(torch.uint8))


def test_copy_in_place_declines_what_a_memcpy_cannot_do():
    src = torch.randn(4, 6)
    assert not copy_in_place(torch.zeros(6, 4).t(), src)  # non-contiguous target
    assert not copy_in_place(torch.zeros(4, 6, dtype=torch.float64), src)  # dtype cast
    assert not copy_in_place(torch.zeros(24), src)  # another shape
    assert not copy_in_place(torch.zeros(4, 6, device="meta"), src)


def test_weights_to_model_fills_parameters_exactly_and_keeps_them_trainable():
    torch.manual_seed(0)
    src, dst = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    weights = PyTorchIntegration.model_to_weights(src)
    dst_param = dst.weight
    PyTorchIntegration.weights_to_model(weights, dst, strict=True)
    assert dst.weight is dst_param and dst.weight.requires_grad
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    dst.weight.sum().backward()  # still a leaf of the graph
    assert dst.weight.grad is not None


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(600, 600), torch.nn.ReLU(), torch.nn.Linear(600, 10))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 600)).sum().backward()
    opt.step()
    repo = Repository(tmp_path / "repo", init=True)
    mgr = CheckpointManager(repo, experiment_name="exp")
    state = TrainingState(epoch=1, global_step=7, optimizer_state=PyTorchIntegration.save_optimizer_state(opt))
    commit = mgr.save_checkpoint(PyTorchIntegration.model_to_weights(model), state, force=True)
    mgr.wait()
    return repo, commit, model, opt


def test_load_checkpoint_commit_reads_everything_at_once_exactly(tmp_path):
    repo, commit, model, opt = _checkpoint(tmp_path)
    ck = load_checkpoint_commit(repo, commit)
    assert ck["commit_hash"] == commit and ck["state"].global_step == 7
    assert all(w.is_loaded for w in ck["weights"].values())  # read in one batch, not lazily
    assert ck["weights"]["0.weight"].metadata.layer_type == "Linear"
    for name, t in model.state_dict().items():
        assert np.array_equal(ck["weights"][name].data, t.numpy())
    moments = ck["state"].optimizer_state["state"][0]
    assert np.array_equal(moments["exp_avg"], opt.state_dict()["state"][0]["exp_avg"].numpy())


def test_load_checkpoint_commit_names_the_damaged_tensor(tmp_path):
    repo, commit, _model, _opt = _checkpoint(tmp_path)
    entry = repo.get_commit(commit).tree["0.weight"]
    path = repo.store.root.joinpath("objects", "chunks", entry.chunks[0][:2], entry.chunks[0][2:])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError, match="0.weight"):
        load_checkpoint_commit(repo, commit)
