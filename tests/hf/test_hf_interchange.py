"""HF folders in and out of Coral: ``coral export --format hf`` loads with from_pretrained, ``coral import`` is
bit-exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from coral import Repository
from coral.errors import InvalidArgumentError, MalformedFileError
from coral.plugins import hook
from coral_hf import export_hf_folder, read_hf_folder
from coral_hf.callback import model_config
from coral_hf.hooks import coral_export
from coral_torch import PyTorchIntegration
from coral_torch.convert import tensor_to_numpy
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

STATE_ROOTS = ("optim", "sched", "rng", "data")


def _bits(t: torch.Tensor) -> tuple:
    a = tensor_to_numpy(t)
    return str(a.dtype), a.shape, a.tobytes()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    """A repository whose HEAD is a CoralTrainerCallback checkpoint (weights + optimizer/RNG state + HF metadata)."""
    root = tmp_path_factory.mktemp("ckpt")
    _, _, model = tiny.run(
        {
            "repo": str(root / "repo"),
            "output_dir": str(root / "out"),
            "max_steps": 2,
            "callback": {"save_every_n_steps": 2},
        }
    )
    return Repository(root / "repo"), model


def test_export_hook_writes_a_folder_from_pretrained_loads_exactly(tmp_path, checkpoint):
    repo, model = checkpoint
    commit = repo.get_commit("HEAD")
    arrays = repo.load_arrays("HEAD")
    assert any(n.startswith("optim/") for n in arrays)
    out = hook().coral_export(weights=arrays, metadata=commit.metadata, out=str(tmp_path / "hf"), format="hf")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(loaded).__name__ == "BertForSequenceClassification"
    assert loaded.config.hidden_size == 32
    want = model.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(want)
    for name in want:
        assert _bits(got[name]) == _bits(want[name]), name


def test_import_reads_save_pretrained_folders_bit_exact_and_keeps_the_config(tmp_path, tiny):
    model = tiny.make_model(seed=3)
    model.save_pretrained(tmp_path / "hf")
    weights = hook().coral_import_file(path=str(tmp_path / "hf"))
    assert weights is not None
    assert weights.metadata["hf"]["model_config"]["model_type"] == "bert"
    want = model.state_dict()
    assert sorted(weights) == sorted(want)
    for name, t in want.items():
        a = weights[name]
        assert (str(a.dtype), a.shape, a.tobytes()) == _bits(t), name
    weights.close()
    # and back out through a commit: export -> import gives the same tensors again
    repo = Repository(tmp_path / "repo", init=True)
    arrays, config = read_hf_folder(tmp_path / "hf")
    repo.stage_weights(arrays)
    repo.commit("import", {"hf": {"model_config": config}})
    out = coral_export(
        repo.load_arrays("HEAD"), repo.get_commit("HEAD").metadata, str(tmp_path / "again"), "hf"
    )
    again, config2 = read_hf_folder(out)
    assert config2 == config
    assert {n: a.tobytes() for n, a in again.items()} == {n: a.tobytes() for n, a in arrays.items()}


def test_bf16_and_sharded_folders_round_trip(tmp_path, tiny):
    model = tiny.make_model(seed=4).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    arrays, config = read_hf_folder(tmp_path / "sharded")
    assert {str(a.dtype) for a in arrays.values()} == {"bfloat16"}
    out = export_hf_folder(arrays, config, tmp_path / "single")
    loaded = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.bfloat16)
    for name, t in model.state_dict().items():
        assert _bits(loaded.state_dict()[name]) == _bits(t), name


def test_tied_weights_export_loads(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    )
    weights = PyTorchIntegration.model_to_weights(model)
    out = export_hf_folder(weights, model_config(model), tmp_path / "mlm")
    loaded = AutoModelForMaskedLM.from_pretrained(out)
    for name, t in model.state_dict().items():
        assert _bits(loaded.state_dict()[name]) == _bits(t), name


def test_refusals_name_the_problem(tmp_path, tiny):
    assert coral_export({}, {}, str(tmp_path / "x"), "onnx") is None  # not our format
    with pytest.raises(InvalidArgumentError, match="no HF model config"):
        coral_export({"w": torch.zeros(1).numpy()}, {}, str(tmp_path / "x"), "hf")
    assert hook().coral_import_file(path=str(tmp_path)) is None  # a folder without config.json is not ours
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "bert"}))
    torch.save({"w": torch.zeros(2)}, pickled / "pytorch_model.bin")
    with pytest.raises(MalformedFileError, match="never unpickles"):
        hook().coral_import_file(path=str(pickled))
    tiny.make_model().save_pretrained(tmp_path / "broken", max_shard_size="20KB")
    index = json.loads((tmp_path / "broken" / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    (tmp_path / "broken" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MalformedFileError, match="not a file in the folder"):
        hook().coral_import_file(path=str(tmp_path / "broken"))


def _coral_cli() -> list[str]:
    exe = Path(sys.executable).with_name("coral")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "coral.cli.main"]


def test_cli_export_then_import_is_bit_exact(tmp_path, checkpoint):
    repo, model = checkpoint
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = tmp_path / "hf"
    done = subprocess.run(
        _coral_cli() + ["export", "HEAD", "--format", "hf", str(out)],
        cwd=repo.path,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the message counts what was written: the model tensors, not the optimizer/RNG state the format leaves out
    n_model = len(model.state_dict())
    n_state = sum(1 for n in repo.get_commit("HEAD").tree if n.split("/", 1)[0] in STATE_ROOTS)
    assert n_state > 0
    assert f"Exported {n_model} tensors" in done.stdout, done.stdout
    assert f"left out {n_state} tensors" in done.stdout and "optim/" in done.stdout, done.stdout
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    for name, t in model.state_dict().items():
        assert _bits(loaded.state_dict()[name]) == _bits(t), name

    target = tmp_path / "imported"
    shutil.copytree(repo.path / ".coral", target / ".coral")  # same store: the import must deduplicate
    done = subprocess.run(
        _coral_cli() + ["import", str(out)],
        cwd=target,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = Repository(target)
    head = imported.get_commit("HEAD")
    assert head.metadata["hf"]["model_config"]["hidden_size"] == 32
    original = repo.get_commit("HEAD").tree
    model_names = sorted(n for n in original if n.split("/", 1)[0] not in STATE_ROOTS)
    assert sorted(head.tree) == model_names
    for name in model_names:  # the same dtype, shape and content ids (chunks, or a small tensor's digest)
        assert head.tree[name].identity == original[name].identity, name
