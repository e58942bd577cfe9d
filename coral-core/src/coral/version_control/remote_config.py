"""Which remotes a repository knows: names and URLs (in its ``config`` ref) and the remote-tracking branches.

A remote is any Coral repository a store URL opens: a folder, ``file://``, ``memory://``, ``s3://...`` or any
scheme a plugin registers. Remote-tracking branches are refs ``remotes/<remote>/<branch>`` (``origin/main``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    CorruptObjectError,
    InvalidArgumentError,
    RefConflictError,
    RefExistsError,
    RepositoryNotFoundError,
    UnknownRemoteError,
)
from .history import is_commit_id
from .names import validate_ref_name
from .refs import TRACKING_PREFIX

if TYPE_CHECKING:
    from .repository import Repository

_CAS_TRIES = 100


# ---- configuration --------------------------------------------------------------------------------------
def read_config(repo: Repository) -> tuple[str | None, dict[str, Any]]:
    raw = repo.store.get_ref("config")
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise CorruptObjectError("ref config", f"not a JSON document: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("remotes", {}), dict):
        raise CorruptObjectError("ref config", "not a configuration document")
    return raw, doc


def update_config(repo: Repository, fn: Any) -> None:
    for _ in range(_CAS_TRIES):
        raw, doc = read_config(repo)
        fn(doc)
        if repo.store.compare_and_swap("config", raw, json.dumps(doc, sort_keys=True)):
            return
    raise RefConflictError("the repository configuration kept changing")


def normalize_url(url: Any) -> str:
    """A bare or ``file://`` path becomes absolute (a remote must not depend on the current folder)."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url.strip() or "\x00" in url:
        raise InvalidArgumentError("url", url, "expected a repository folder or store URL")
    if "://" in url and not url.startswith("file://"):
        return url
    path = url[len("file://") :] if url.startswith("file://") else url
    return str(Path(path).expanduser().resolve())


def list_remotes(repo: Repository) -> dict[str, str]:
    """``{name: url}`` of every configured remote."""
    return {name: str(v.get("url")) for name, v in sorted(read_config(repo)[1].get("remotes", {}).items())}


def remote_url(repo: Repository, name: str) -> str:
    """The URL of remote ``name``; UnknownRemoteError naming the configured ones otherwise."""
    remotes = list_remotes(repo)
    if name not in remotes:
        known = ", ".join(remotes) or "none configured; add one with `coral remote add NAME URL`"
        raise UnknownRemoteError("remote", name, f"no such remote (known: {known})")
    return remotes[name]


def add_remote(repo: Repository, name: str, url: str | os.PathLike[str]) -> str:
    """Configure remote ``name`` at ``url`` (checked: it must open as a Coral repository); returns the URL."""
    validate_ref_name(name, "remote")
    if "/" in name:
        raise InvalidArgumentError("remote", name, "a remote name cannot contain '/'")
    url = normalize_url(url)
    if name in list_remotes(repo):
        raise RefExistsError(f"remote {name!r} already exists (remove it first: coral remote remove {name})")
    open_remote(url).close()

    def add(doc: dict[str, Any]) -> None:
        remotes = doc.setdefault("remotes", {})
        if name in remotes:
            raise RefExistsError(f"remote {name!r} already exists")
        remotes[name] = {"url": url}

    update_config(repo, add)
    return url


def remove_remote(repo: Repository, name: str) -> None:
    """Forget remote ``name`` and its remote-tracking branches (the remote itself is untouched)."""
    remote_url(repo, name)
    update_config(repo, lambda doc: doc.get("remotes", {}).pop(name, None))
    for ref, value in repo.store.list_refs(f"{TRACKING_PREFIX}{name}/").items():
        repo.store.compare_and_swap(ref, value, None)


def open_remote(url: str) -> Repository:
    """Open the repository at ``url``; a URL that is no Coral repository or has no backend fails here."""
    from .repository import Repository

    url = normalize_url(url)
    try:
        return Repository(url)
    except RepositoryNotFoundError:
        raise RepositoryNotFoundError(f"{url} is not a Coral repository: it cannot be a remote") from None


def tracking_refs(repo: Repository, remote: str | None = None) -> dict[str, str]:
    """``{"origin/main": commit}`` for every remote-tracking branch (of one remote when given)."""
    return repo.refs.tracking(remote)


def ref_targets(repo: Repository) -> set[str]:
    """Commits named by branches, tags, remote-tracking branches and a detached HEAD (damaged values left out:
    fsck names them)."""
    return {c for c in repo.refs.targets() if is_commit_id(c)}
