"""One pytree per commit: the arrays go in the commit tree, the JSON structure in its metadata."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from coral import Repository
from coral.errors import InvalidArgumentError
from coral.training.provenance import Provenance

from .pytree import flatten_pytree, unflatten_pytree

META_KEY = "coral_jax"
"""Commit metadata key holding ``{"structure": ..., "step": ..., "manager": ...}``."""


def open_repository(repository: Repository | str | os.PathLike[str]) -> Repository:
    """A Repository as given, or the one at a path (created when missing, like Orbax creates its folder)."""
    if isinstance(repository, Repository):
        return repository
    if isinstance(repository, (str, os.PathLike)):
        return Repository(repository, init=True)
    raise InvalidArgumentError(
        "repository", type(repository).__name__, "expected a coral Repository or a path"
    )


def commit_arrays(
    repo: Repository,
    arrays: Mapping[str, np.ndarray],
    structure: Mapping[str, Any] | None,
    message: str,
    metadata: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    *,
    pack: bool = True,
) -> str:
    """Stage ``arrays`` and commit them with the structure (and ``info``) under ``metadata["coral_jax"]``;
    ``pack``: pack the previous commit against this one in the background."""
    if not arrays:
        raise InvalidArgumentError("tree", "no arrays", "a checkpoint needs at least one array leaf")
    meta = Provenance().capture() | dict(metadata or {})  # provenance: versions, device, code commit (issue 29)
    if META_KEY in meta:
        raise InvalidArgumentError("metadata", META_KEY, "is reserved for coral-jax")
    meta[META_KEY] = {"structure": structure, **dict(info or {})}
    repo.stage_weights(dict(arrays))
    return repo.commit(message, meta, pack=pack)


def save_pytree(
    repository: Repository | str | os.PathLike[str],
    tree: Any,
    message: str = "Save pytree",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Commit every array of ``tree`` under its key-path name, with the structure; returns the commit hash."""
    repo = open_repository(repository)
    arrays, structure = flatten_pytree(tree)
    return commit_arrays(repo, arrays, structure, message, metadata)


def stored_structure(repo: Repository, ref: str | None) -> dict[str, Any] | None:
    """The pytree structure kept in a commit's metadata, or None (a commit not written by coral-jax)."""
    info = repo.get_commit(ref).metadata.get(META_KEY)
    return (info or {}).get("structure") if isinstance(info, dict) else None


def load_pytree(
    repository: Repository | str | os.PathLike[str],
    ref: str | None = None,
    like: Any = None,
    *,
    as_numpy: bool = False,
) -> Any:
    """Read a commit (default HEAD) back as a pytree: into ``like``'s exact structure and dtypes when given,
    else rebuilt from the stored structure (or nested dicts split on ``/`` for other commits)."""
    repo = open_repository(repository)
    cid = repo.resolve(ref)
    weights = repo.get_weights(cid)
    return unflatten_pytree(weights, stored_structure(repo, cid), like, as_numpy=as_numpy)


__all__ = ["load_pytree", "save_pytree"]
