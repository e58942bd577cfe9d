"""Checks and repairs through a remote: ``fsck`` of the remote itself, and local damage healed from it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import CorruptObjectError, ObjectNotFoundError, RefNotFoundError
from .commit import Commit, commit_key
from .remote_config import open_remote, ref_targets, remote_url
from .transfer import ProgressFn, copy_chunks, first_good

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)


# ---- checks and repair --------------------------------------------------------------------------------
def fsck_remote(repo: Repository, remote: str) -> dict[str, Any]:
    """``fsck`` of the remote repository itself (every reachable commit and chunk there is verified)."""
    with open_remote(remote_url(repo, remote)) as other:
        result = other.fsck()
    result["remote"] = remote
    return result


def repair(repo: Repository, remote: str, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Replace damaged or missing local chunks and commits with verified copies from ``remote``.

    Returns ``{"repaired": [ids], "unrepaired": [problems], "ok": bool}`` (``ok`` from a final fsck)."""
    url = remote_url(repo, remote)
    bad_chunks, bad_commits = _damaged(repo)
    repaired: list[str] = []
    with open_remote(url) as other:
        for cid in sorted(bad_commits):
            try:
                raw = other.store.get(commit_key(cid))
                Commit.from_bytes(cid, raw)  # verified before it replaces anything
            except (ObjectNotFoundError, CorruptObjectError) as exc:
                log.warning("commit %s cannot be repaired from %s: %s", cid[:12], remote, exc)
                continue
            repo.store.put(commit_key(cid), raw, overwrite=True)
            repaired.append(cid)
        extra_chunks, _ = _damaged(repo) if bad_commits else (set(), set())
        wanted = sorted(bad_chunks | extra_chunks)
        for cid in wanted:
            try:
                copy_chunks(other.store, repo.store, [cid], first_good(other.objects, repo.objects),
                            overwrite=[cid], progress=progress)
                repaired.append(cid)
            except (ObjectNotFoundError, CorruptObjectError) as exc:
                log.warning("chunk %s cannot be repaired from %s: %s", cid[:12], remote, exc)
    result = repo.fsck()
    return {"repaired": repaired, "unrepaired": result["errors"], "ok": result["ok"]}


def _damaged(repo: Repository) -> tuple[set[str], set[str]]:
    """(chunk ids, commit ids) that are missing or fail verification locally, for reachable live commits."""
    bad_chunks: set[str] = set()
    bad_commits: set[str] = set()
    seen: set[str] = set()
    checked: set[str] = set()
    repo.fsck()  # re-reads every commit from the store (a cached copy may hide damage since)
    frontier = list(ref_targets(repo))
    while frontier:
        c = frontier.pop()
        if c in seen:
            continue
        seen.add(c)
        try:
            commit = repo.history.read_commit(c)
        except (RefNotFoundError, CorruptObjectError):
            bad_commits.add(c)
            continue
        frontier.extend(commit.parents)
        if repo.is_pruned(c):
            continue
        for entry in commit.tree.values():
            for cid in entry.chunks:
                if cid in checked:
                    continue
                checked.add(cid)
                try:
                    repo.objects.verify_chunk(cid)
                except (CorruptObjectError, ObjectNotFoundError) as exc:
                    bad_chunks.add(cid)
                    obj = getattr(exc, "object_id", None)
                    if isinstance(obj, str) and len(obj) == 64:  # damage sits in a delta base
                        bad_chunks.add(obj)
    return bad_chunks, bad_commits
