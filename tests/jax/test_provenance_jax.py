"""coral-jax commits carry provenance too: jax/jaxlib/flax/optax/orbax versions from the coral-jax hook."""

from __future__ import annotations

import importlib.metadata

import jax.numpy as jnp
from coral import Repository
from coral.training import read_provenance
from coral_jax import save_pytree


def test_pytree_commit_records_jax_versions(tmp_path):
    repo = Repository(tmp_path / "repo", init=True)
    commit = save_pytree(repo, {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, metadata={"note": "x"})
    meta = repo.get_commit(commit).metadata
    prov = read_provenance(meta)
    assert meta["note"] == "x"
    for name in ("jax", "jaxlib", "flax", "optax"):
        assert prov["versions"][name] == importlib.metadata.version(name)
    assert prov["versions"]["orbax_checkpoint"] == importlib.metadata.version("orbax-checkpoint")
    assert prov["device"]["count"] >= 1
