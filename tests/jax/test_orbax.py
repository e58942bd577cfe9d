"""Orbax interop with real orbax.checkpoint: import its checkpoints into commits, export commits it restores."""

from __future__ import annotations

import warnings

import coral_jax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from coral_jax import CoralCheckpointManager

ocp = pytest.importorskip("orbax.checkpoint")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Orbax's "sharding info not provided" notes
        yield


def _train_state(linen_state):
    variables, opt_state = linen_state
    opt_state = jax.tree_util.tree_map(lambda x: x + 3, opt_state)
    return {"params": variables["params"], "opt_state": opt_state, "step": 12}


def test_import_standard_checkpoint_is_bit_exact(tmp_path, repo, linen_state, bit_equal):
    state = _train_state(linen_state)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "ckpt", state)
    ckptr.wait_until_finished()
    cid = coral_jax.import_orbax(tmp_path / "ckpt", repo)
    weights = repo.get_weights(cid)
    assert weights["params/Dense_0/kernel"].metadata.dtype == "bfloat16"
    assert "opt_state/0/mu/Dense_1/kernel" in weights  # same names as a direct save
    bit_equal(state, coral_jax.load_pytree(repo, cid, like=state))
    # without a template: what Orbax itself gives back (namedtuples as dicts, jax arrays)
    plain = coral_jax.load_pytree(repo, cid)
    assert isinstance(plain["params"]["Dense_0"]["kernel"], jax.Array) and plain["step"] == 12
    assert set(plain["opt_state"][0]) == {"count", "mu", "nu"}


def test_import_checkpoint_manager_steps_registers_them_for_restore(tmp_path, repo, bit_equal):
    root = tmp_path / "orbax_mgr"
    mgr = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(best_fn=lambda m: m["acc"]))
    trees = {
        s: {"w": jnp.full((3,), s, jnp.bfloat16), "k": jax.random.key_data(jax.random.key(s))}
        for s in (10, 20)
    }
    for s, tree in trees.items():
        mgr.save(s, args=ocp.args.StandardSave(tree), metrics={"acc": s / 100})
    mgr.wait_until_finished()
    mgr.close()
    coral_jax.import_orbax(root, repo, step=10)
    cid = coral_jax.import_orbax(root, repo)  # the latest step by default
    coral_mgr = CoralCheckpointManager(repo)
    assert coral_mgr.all_steps() == [10, 20] and coral_mgr.commit_hash(20) == cid
    assert coral_mgr.metrics(20) == {"acc": 0.2}
    bit_equal(trees[10], coral_mgr.restore(10, items_like=trees[20]))
    bit_equal(trees[20], coral_mgr.restore())


def test_export_commit_restores_bit_exact_in_orbax(tmp_path, repo, linen_state, bit_equal):
    state = _train_state(linen_state)
    state["key"] = jax.random.key(3, impl="rbg")
    mgr = CoralCheckpointManager(repo)
    mgr.save(5, state)
    out = coral_jax.export_orbax(repo, mgr.commit_hash(5), tmp_path / "exported")
    restored = ocp.StandardCheckpointer().restore(out)  # no template: Orbax's own view of the tree
    assert restored["params"]["Dense_0"]["kernel"].dtype == jnp.bfloat16
    bit_equal(state["params"], restored["params"])
    bit_equal(state["key"], restored["key"])  # a typed key stays a typed key
    for a, b in zip(
        jax.tree_util.tree_leaves(state["opt_state"]), jax.tree_util.tree_leaves(restored["opt_state"])
    ):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # with a template Orbax restores into the exact classes
    bit_equal(state, ocp.StandardCheckpointer().restore(out, state))
    # and importing the export gives the same commit content back, typed key included
    again = coral_jax.import_orbax(out, repo)
    assert repo.get_commit(again).tree == repo.get_commit(mgr.commit_hash(5)).tree
    assert jax.dtypes.issubdtype(coral_jax.load_pytree(repo, again)["key"].dtype, jax.dtypes.prng_key)


def test_export_as_checkpoint_manager_step_and_round_trip_back(tmp_path, repo, bit_equal):
    tree = {"enc": {"w": jnp.arange(6, dtype=jnp.float16).reshape(2, 3)}, "lst": [jnp.ones(2, jnp.int8)]}
    cid = coral_jax.save_pytree(repo, tree)
    coral_jax.export_orbax(repo, cid, tmp_path / "root", step=7)
    omgr = ocp.CheckpointManager(tmp_path / "root")
    assert omgr.all_steps() == [7]
    bit_equal(tree, omgr.restore(7, args=ocp.args.StandardRestore(tree)))
    omgr.close()
    back = coral_jax.import_orbax(tmp_path / "root", repo, name="roundtrip")
    bit_equal(tree, coral_jax.load_pytree(repo, back, like=tree))
    assert coral_jax.read_orbax(tmp_path / "root")["enc/w"].dtype == np.float16


def test_import_and_export_hooks_serve_coral_import_and_export(tmp_path, repo, bit_equal):
    from coral.plugins import hook

    tree = {"enc": {"w": jnp.arange(4, dtype=jnp.bfloat16)}, "head": [jnp.ones(2, jnp.float32)]}
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "ck", tree)
    ckptr.wait_until_finished()
    arrays = hook().coral_import_file(path=str(tmp_path / "ck"))
    assert set(arrays) == {"enc/w", "head/0"} and arrays["enc/w"].dtype == jnp.bfloat16
    assert hook().coral_import_file(path=str(tmp_path / "ck" / "_METADATA")) is None  # not a folder
    cid = coral_jax.save_pytree(repo, tree)
    weights = {n: w.data for n, w in repo.get_weights(cid).items()}
    written = hook().coral_export(
        weights=weights, metadata=repo.get_commit(cid).metadata, out=str(tmp_path / "o"), format="orbax"
    )
    bit_equal(tree, ocp.StandardCheckpointer().restore(written))


def test_cli_export_orbax_to_a_bad_path_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    # issue 28: an unwritable path used to print ~140 lines of absl tracebacks and hang for 5 minutes
    from coral import Repository
    from coral.cli.main import main

    repo = Repository(tmp_path / "r", init=True)
    repo.stage_weights({"w": np.ones(3, np.float32)})
    repo.commit("one")
    monkeypatch.chdir(tmp_path / "r")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "exists").mkdir()
    for target, why in [
        ("/proc/self/coral-nope/ckpt", "not writable"),
        (str(tmp_path / "afile" / "ckpt"), "is a file, not a folder"),
        (str(tmp_path / "exists"), "already exists"),
    ]:
        code = main(["export", "HEAD", target, "--format", "orbax"])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and target in lines[0] and why in lines[0], err
