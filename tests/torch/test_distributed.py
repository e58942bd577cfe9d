"""torch.distributed with Coral: real ranks (gloo on CPU) for DDP and FSDP2, and DCP storage in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coral_torch  # noqa: E402
import dist_launch  # noqa: E402
import dist_worker  # noqa: E402
from coral import Repository  # noqa: E402
from coral.errors import CheckpointError, InvalidArgumentError  # noqa: E402
from coral_torch import dcp as cdcp  # noqa: E402
from coral_torch.distributed import strip_wrapper_prefixes, unwrap  # noqa: E402

CORAL = str(Path(sys.executable).with_name("coral"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# ---- real process groups ------------------------------------------------------------------------------
def test_ddp_checkpointer_and_save_commit_once_per_save_with_one_hash_on_every_rank(tmp_path):
    repo = tmp_path / "repo"
    r0, r1 = dist_launch.run("ddp", 2, repo, tmp_path / "out")
    assert r0["hashes"] == r1["hashes"] and len(set(r0["hashes"])) == 3
    assert r0["oneoff"] == r1["oneoff"]
    assert r0["resumed"] == r1["resumed"] == r0["hashes"][-1]  # resume=True: the same commit on every rank
    assert r0["trainer"] == r1["trainer"] and None not in r0["trainer"]  # CoralTrainer: the same
    assert r0["trainer_loaded"] == r1["trainer_loaded"] == r0["trainer"][-1]
    repository = Repository(repo)
    assert len(repository.log()) == 6  # 3 saves + 1 one-off save + 2 trainer saves, not 12
    tree = repository.get_commit(r0["hashes"][-1]).tree
    assert not any(n.startswith("module.") for n in tree)  # DDP's prefix is not saved
    plain = dist_worker.model_fn()
    assert coral_torch.load(plain, repository, r0["oneoff"], strict=True)["matched"]


def test_a_rank_that_never_reaches_the_save_point_gives_a_clear_error(tmp_path):
    out = tmp_path / "out"
    procs = dist_launch.start("timeout", 2, tmp_path / "repo", out)
    for p in procs:
        p.communicate(timeout=120)
    report = json.loads((out / "rank0.json").read_text())
    assert report["error"] and "not every rank reached the save point" in report["error"]
    assert not (tmp_path / "repo").exists() or not Repository(tmp_path / "repo").log()


def test_fsdp2_sharded_save_loads_bit_exact_on_2_and_1_ranks_and_exports(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    r0, r1 = dist_launch.run("fsdp_save", 2, repo, out)
    commit = r0["commit"]
    assert commit and r1["commit"] is None  # the coordinator holds the hash (Checkpointer broadcasts it)
    repository = Repository(repo)
    assert len(repository.log()) == 1  # one commit for both ranks' shards
    ref = torch.load(out / "ref.pt", weights_only=True)
    dist_launch.run("fsdp_load", 2, repo, out)  # a NEW process group of the same size
    assert same(ref, torch.load(out / "got2.pt", weights_only=True))
    dist_launch.run("fsdp_load", 1, repo, out)  # resharded 2 -> 1 by DCP's planner
    assert same(ref, torch.load(out / "got1.pt", weights_only=True))

    # the CLI sees an ordinary commit; export consolidates the shards into the unsharded model's tensors
    log = subprocess.run([CORAL, "-C", str(repo), "log"], capture_output=True, text=True, check=True).stdout
    assert commit[:8] in log
    show = subprocess.run([CORAL, "-C", str(repo), "show", commit], capture_output=True, text=True, check=True)
    assert "fsdp 2 ranks" in show.stdout
    target = tmp_path / "model.safetensors"
    subprocess.run([CORAL, "-C", str(repo), "export", commit, str(target), "--weights-only"], check=True,
                   capture_output=True)
    from safetensors.torch import load_file

    model = dist_worker.model_fn()
    model.load_state_dict(load_file(target), strict=True)
    exported = {f"model/{k}": v for k, v in model.state_dict().items()}
    assert same(exported, {k: v for k, v in ref.items() if k.startswith("model/")})


def test_one_rank_save_loads_on_two_ranks(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    dist_launch.run("fsdp_save", 1, repo, out)
    dist_launch.run("fsdp_load", 2, repo, out)
    assert same(torch.load(out / "ref.pt", weights_only=True), torch.load(out / "got2.pt", weights_only=True))


def test_checkpointer_dcp_is_the_one_line_path_and_resumes_on_another_rank_count(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    r0, r1 = dist_launch.run("ckpt_dcp", 2, repo, out)
    assert r0["hashes"] == r1["hashes"] and None not in r0["hashes"]
    (c,) = dist_launch.run("ckpt_dcp_check", 1, repo, out)
    assert c["resumed"] == r0["hashes"][-1] and c["start_epoch"] == 2
    assert same(torch.load(out / "ckpt2.pt", weights_only=True), torch.load(out / "resumed1.pt", weights_only=True))


# ---- one process ---------------------------------------------------------------------------------------
def test_wrapper_prefixes_are_stripped_on_save_and_either_spelling_loads(tmp_path):
    model = dist_worker.model_fn()
    compiled = torch.compile(model)  # wraps only (no compilation until called): names get ``_orig_mod.``
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert unwrap(compiled) is model
    h = coral_torch.save(compiled, tmp_path / "r")["commit_hash"]
    assert not any(n.startswith("_orig_mod.") for n in Repository(tmp_path / "r").get_commit(h).tree)
    assert coral_torch.load(compiled, tmp_path / "r", h, strict=True)["matched"]
    # a commit saved with ``module.`` names (an older save of a DDP model) loads into the plain model
    wrapped = {f"module.{k}": v for k, v in coral_torch.PyTorchIntegration.model_to_weights(model).items()}
    repo = Repository(tmp_path / "r")
    repo.stage_weights(wrapped)
    old = repo.commit("ddp names")
    fresh = dist_worker.model_fn()
    with torch.no_grad():
        fresh[0].weight.zero_()
    assert coral_torch.load(fresh, repo, old, strict=True)["matched"]
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert strip_wrapper_prefixes({"module.module_x": 1, "y": 2}) == {"module.module_x": 1, "y": 2}


def test_dcp_round_trip_in_one_process_keeps_dtypes_and_stores_no_pickle(tmp_path):
    import torch.distributed.checkpoint as dcp

    state = {
        "model": {"w": torch.randn(64, 8).to(torch.bfloat16), "i": torch.arange(10, dtype=torch.int64)},
        "extra": {"lr": 0.5, "betas": (0.9, 0.999), "name": "adam"},
    }
    writer = cdcp.CoralWriter(tmp_path / "r", message="one process")
    dcp.save(state, storage_writer=writer)
    repo = Repository(tmp_path / "r")
    commit = repo.get_commit(writer.commit_hash)
    assert sorted(commit.tree) == ["model/i", "model/w"]
    assert commit.metadata["dcp"]["bytes"]["extra.lr"] == 0.5  # small objects are JSON, not pickles
    back = {"model": {"w": torch.zeros(64, 8, dtype=torch.bfloat16), "i": torch.zeros(10, dtype=torch.int64)},
            "extra": {"lr": 0.0, "betas": (0.0, 0.0), "name": ""}}
    dcp.load(back, storage_reader=cdcp.CoralReader(repo, writer.commit_hash))
    assert torch.equal(back["model"]["w"].view(torch.int16), state["model"]["w"].view(torch.int16))
    assert torch.equal(back["model"]["i"], state["model"]["i"])
    assert back["extra"]["lr"] == 0.5 and back["extra"]["name"] == "adam"
    # dedup applies to shards: saving the same state again writes no new chunk
    before = repo.stats()
    writer2 = cdcp.CoralWriter(repo, message="again")
    dcp.save(state, storage_writer=writer2)
    assert repo.get_commit(writer2.commit_hash).tree["model/w"].chunks == commit.tree["model/w"].chunks
    assert repo.stats()["stored_bytes"] - before["stored_bytes"] < 4096  # only the new commit object


def test_metadata_json_round_trip_and_bad_input(tmp_path):
    h = coral_torch.save(dist_worker.model_fn(), tmp_path / "r")["commit_hash"]
    reader = cdcp.CoralReader(tmp_path / "r", h)
    with pytest.raises(CheckpointError, match="not a DCP checkpoint"):
        reader.read_metadata()
    with pytest.raises(InvalidArgumentError, match="distributed"):
        coral_torch.Checkpointer(dist_worker.model_fn(), tmp_path / "r", "x", distributed="fsdp")
    with pytest.raises(InvalidArgumentError, match="barrier_timeout"):
        coral_torch.Checkpointer(dist_worker.model_fn(), tmp_path / "r", "x", barrier_timeout=0)
    layout = {"tensors": {"a": {"dtype": "float32", "size": [4], "requires_grad": False,
                                "chunks": [{"offsets": [0], "sizes": [2], "name": "a@0"},
                                           {"offsets": [2], "sizes": [2], "name": "a@2"}]}, "b": None}}
    md, names = cdcp.metadata_from_json(layout)
    assert md.state_dict_metadata["a"].size == torch.Size([4]) and len(names) == 2
    from coral_torch.dcp_export import assemble

    full = assemble(layout["tensors"]["a"], {"a@0": np.array([1, 2], np.float32), "a@2": np.array([3, 4], np.float32)})
    assert full.tolist() == [1, 2, 3, 4]
