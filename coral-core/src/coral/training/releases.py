"""Releases: weights-only commits of a checkpoint, tagged ``v<semver>`` with an optional model card."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..core.weight_tensor import WeightTensor
from ..errors import InvalidArgumentError, RefExistsError
from ..version_control.commit import Commit, commit_key
from ..version_control.repository import Repository
from .layout import model_only

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def check_version(version: Any) -> str:
    """The semantic version without a leading ``v``; anything else is refused."""
    if not isinstance(version, str) or not _SEMVER.fullmatch(version.removeprefix("v")):
        raise InvalidArgumentError("version", version, "must be a semantic version such as 1.2.0")
    return version.removeprefix("v")


def release(
    repository: Repository,
    version: str,
    source: str,
    experiment_name: str,
    model_card: str | Mapping[str, Any] | None = None,
) -> str:
    """Commit ``source``'s model weights (no optimizer/RNG/data state) and tag it ``v{version}``; returns the id."""
    version = check_version(version)
    name = f"v{version}"
    if repository.store.get_ref(f"tags/{name}") is not None:
        raise RefExistsError(f"release {name} already exists")
    commit = repository.get_commit(source)
    meta = {
        "release": {"version": version, "source": source, "experiment": experiment_name},
        "metrics": commit.metadata.get("metrics", {}),
    }
    rel = Commit([source], f"Release {name}", meta, model_only(commit.tree))
    repository.store.put(commit_key(rel.id), rel.to_bytes())
    tag_meta = {"release": True, "version": version}
    repository.tag_version(name, f"release {version}", rel.id, model_card, metadata=tag_meta)
    return rel.id


def list_releases(repository: Repository) -> list[dict[str, Any]]:
    """Release tags, oldest version first."""
    rel = [t for t in repository.list_tags() if (t.get("metadata") or {}).get("release")]
    return sorted(
        rel, key=lambda t: [int(x) if x.isdigit() else x for x in re.split(r"[.\-+]", t["metadata"]["version"])]
    )


def load_release(repository: Repository, version: str) -> dict[str, WeightTensor]:
    """The weights of release ``version`` (with or without the ``v``)."""
    return repository.get_weights(f"v{version.removeprefix('v')}")
