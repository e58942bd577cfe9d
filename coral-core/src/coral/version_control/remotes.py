"""Remotes like git's: named URLs of other repositories, and fetch / push / pull / clone between them.

A remote is any Coral repository a store URL opens: a folder, ``file://``, ``memory://``, ``s3://...`` or
any scheme a plugin registers. Transfers send only what the other side lacks, in a fixed order (chunks,
then commits, then refs), and move the remote branch by compare-and-swap from the value the last fetch saw:
a kill at any instant leaves the remote readable, and running the same push again finishes it.

Remote names, URLs and tracking branches live in remote_config.py; fsck and repair through a remote in
remote_repair.py (both re-exported here).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    CorruptObjectError,
    DivergedError,
    InvalidArgumentError,
    PushRejectedError,
    RefConflictError,
    RefNotFoundError,
)
from ..objects.tensors import CHUNK_BYTES
from .commit import Commit, commit_key
from .history import is_commit_id
from .names import validate_ref_name
from .remote_config import (
    TRACKING_PREFIX,
    add_remote,
    list_remotes,
    normalize_url,
    open_remote,
    ref_targets,
    remote_url,
    remove_remote,
    tracking_refs,
    update_config,
)
from .remote_repair import fsck_remote, repair
from .transfer import ProgressFn, TransferStats, copy_chunks, copy_plain, first_good

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

SHALLOW = "shallow"  # value of a ``pruned/<id>`` marker a depth-limited fetch leaves: weights not fetched
_DOCS = "meta/"  # training histories and step indexes travel with the branches (a resume elsewhere needs them)
_CAS_TRIES = 100


@dataclass
class SyncResult:
    """What a fetch, push or pull did: refs moved (``name: (old, new)``) and the bytes sent."""

    remote: str
    refs: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    commits: int = 0
    objects: int = 0
    bytes: int = 0
    skipped: int = 0

    def add(self, stats: TransferStats) -> None:
        self.objects += stats.objects
        self.bytes += stats.bytes
        self.skipped += stats.skipped

    @property
    def up_to_date(self) -> bool:
        return not self.refs

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "refs": {k: {"old": o, "new": n} for k, (o, n) in self.refs.items()},
            "commits": self.commits,
            "objects": self.objects,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


# ---- history walks ----------------------------------------------------------------------------------------
def _missing_commits(repo: Repository, start: str, have: Any) -> list[str]:
    """Commits reachable from ``start`` in ``repo`` for which ``have(cid)`` is False, children first."""
    out: list[str] = []
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        c = frontier.pop()
        if c in seen:
            continue
        seen.add(c)
        if have(c):
            continue
        out.append(c)
        frontier.extend(repo.history.read_commit(c).parents)
    return out


def _ancestors(repo: Repository, start: str | None) -> set[str]:
    out: set[str] = set()
    frontier = [start] if start else []
    while frontier:
        c = frontier.pop()
        if c in out:
            continue
        out.add(c)
        try:
            frontier.extend(repo.history.read_commit(c).parents)
        except (RefNotFoundError, CorruptObjectError):
            continue
    return out


def _is_ancestor(repo: Repository, ancestor: str, of: str) -> bool:
    return ancestor in _ancestors(repo, of)


def _first_parents(repo: Repository, start: str, n: int) -> list[str]:
    out: list[str] = []
    cur: str | None = start
    while cur is not None and len(out) < n:
        out.append(cur)
        parents = repo.history.read_commit(cur).parents
        cur = parents[0] if parents else None
    return out


def _chunks_of(commits: Iterable[Commit]) -> tuple[list[str], int]:
    """Chunk ids of the trees (each once) and an estimate of their bytes (decoded sizes)."""
    ids: dict[str, int] = {}
    for commit in commits:
        for entry in commit.tree.values():
            remaining = entry.nbytes
            for cid in entry.chunks:
                size = CHUNK_BYTES if entry.packed else min(remaining, CHUNK_BYTES)
                ids.setdefault(cid, size)
                remaining -= size
    return list(ids), sum(ids.values())


def _transfer(
    src: Repository,
    dst: Repository,
    commits: list[str],
    *,
    known: set[str],
    with_weights: Any,
    local: Repository,
    progress: ProgressFn | None,
) -> TransferStats:
    """Copy ``commits`` (children first) ``src`` -> ``dst``: their chunks first (those ``with_weights(cid)``
    allows, minus ``known`` ones), then the commit objects. ``local`` verifies deltas against good copies."""
    parsed = [src.history.read_commit(c) for c in commits]  # hash-checked: a damaged commit is never sent
    full = [p for c, p in zip(commits, parsed, strict=True) if with_weights(c)]
    chunk_ids, estimate = _chunks_of(full)
    chunk_ids = [c for c in chunk_ids if c not in known]
    other = dst if local is src else src
    stats = copy_chunks(
        src.store, dst.store, chunk_ids, first_good(local.objects, other.objects), progress=progress, estimate=estimate
    )
    stats.add(copy_plain(src.store, dst.store, [commit_key(c) for c in reversed(commits)]))
    return stats


def _known_chunks(repo: Repository, commits: Iterable[str], pruned: Any) -> set[str]:
    """Chunks of ``commits`` (which the other side has, unpruned there): no need to ask about them."""
    known: set[str] = set()
    for c in commits:
        if pruned(c):
            continue
        try:
            commit = repo.history.read_commit(c)
        except (RefNotFoundError, CorruptObjectError):
            continue
        for entry in commit.tree.values():
            known.update(entry.chunks)
    return known


def _boundary(repo: Repository, new: list[str], have: Any) -> set[str]:
    """Parents of ``new`` commits that the other side already has."""
    out: set[str] = set()
    fresh = set(new)
    for c in new:
        for p in repo.history.read_commit(c).parents:
            if p not in fresh and have(p):
                out.add(p)
    return out


def _sync_tags(src: Repository, dst: Repository, commits: set[str], why: str, force: bool = False) -> list[str]:
    """Tags of ``src`` naming a commit in ``commits`` (which ``dst`` now has): created at ``dst`` when missing,
    moved when they only moved forward (``best-...`` tags during training) or with ``force``; each move is
    logged in ``dst``'s reflog (``why``: fetch or push)."""
    moved = []
    for ref, value in src.store.list_refs("tags/").items():
        try:
            target = json.loads(value)["commit"]
        except (ValueError, KeyError, TypeError):
            continue
        if target not in commits:
            continue
        cur = dst.store.get_ref(ref)
        if cur == value:
            continue
        if cur is not None and not force:
            try:
                old = json.loads(cur)["commit"]
            except (ValueError, KeyError, TypeError):
                continue
            if old == target or not _is_ancestor(src, old, target):
                log.warning("tag %s differs on the other side; left as it is", ref[len("tags/") :])
                continue
        if dst.refs.update(ref, cur, value, dst.refs.value_for_log(ref), target, f"tag: {why} from {src!r}"):
            moved.append(ref)
    return moved


def _doc_head(value: str | None) -> str | None:
    """The newest checkpoint a training document names: a CheckpointManager history or a JAX step index."""
    try:
        doc = json.loads(value or "")
        if "history" in doc:
            return str(doc["history"][-1]["commit_hash"]) if doc["history"] else None
        entries = doc["checkpoints"]
        return str(max(entries, key=lambda e: e["step"])["commit"]) if entries else None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def _sync_documents(src: Repository, dst: Repository, commits: set[str], judge: Repository) -> None:
    """Training documents (``meta/checkpoints/*``, JAX step indexes) whose newest checkpoint is in ``commits``:
    copied to ``dst`` unless ``dst``'s own history went elsewhere (its newest checkpoint is no ancestor there)."""
    for ref, value in src.store.list_refs(_DOCS).items():
        head = _doc_head(value)
        if head is None or head not in commits:
            continue
        cur = dst.store.get_ref(ref)
        if cur == value:
            continue
        old = _doc_head(cur)
        if cur is not None and old is not None and old != head and not _is_ancestor(judge, old, head):
            log.warning("training history %s differs on the other side; left as it is", ref[len(_DOCS) :])
            continue
        dst.store.compare_and_swap(ref, cur, value)


# ---- fetch ---------------------------------------------------------------------------------------------
def fetch(
    repo: Repository,
    remote: str = "origin",
    *,
    depth: int | None = None,
    progress: ProgressFn | None = None,
    _url: str | None = None,
) -> SyncResult:
    """Download the remote's branches (as ``remote/branch``), their commits and chunks, and their tags.

    ``depth=N`` fetches the chunks of only the newest N commits along each branch; older commits arrive
    without weights (``log`` shows them as pruned)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidArgumentError("depth", depth, "must be a positive integer or None")
    url = _url or remote_url(repo, remote)
    result = SyncResult(remote)
    with open_remote(url) as other:
        # validated: a damaged remote branch is refused (CorruptRefError naming it), never followed
        heads = {b: h for b in other.list_branches() if (h := other.refs.branch_head(b)) is not None}
        # a commit object alone proves nothing (an interrupted fetch may have left it without its parents):
        # only history under a local ref is known complete
        complete: set[str] = set()
        for target in ref_targets(repo):
            complete |= _ancestors(repo, target)
        have = complete.__contains__
        new: list[str] = []
        weighted: set[str] = set()
        for _branch, head in heads.items():
            fresh = _missing_commits(other, head, have)
            new += [c for c in fresh if c not in new]
            if depth is not None:
                weighted.update(_first_parents(other, head, depth))
        remote_pruned = {r[len("pruned/") :] for r in other.store.list_refs("pruned/")}

        def with_weights(c: str) -> bool:
            return c not in remote_pruned and (depth is None or c in weighted)

        stats = _transfer(other, repo, new, known=set(), with_weights=with_weights, local=repo, progress=progress)
        result.add(stats)
        result.commits = len(new)
        for c in new:  # commits that arrived without their weights are marked, before any ref names them
            if not with_weights(c):
                repo.store.compare_and_swap(f"pruned/{c}", None, "1" if c in remote_pruned else SHALLOW)
        for branch, head in heads.items():
            ref = f"{TRACKING_PREFIX}{remote}/{branch}"
            old = repo.store.get_ref(ref)
            if old != head:
                repo.store.compare_and_swap(ref, old, head)
                result.refs[f"{remote}/{branch}"] = (old, head)
        for ref, old in repo.store.list_refs(f"{TRACKING_PREFIX}{remote}/").items():  # deleted on the remote
            if ref[len(f"{TRACKING_PREFIX}{remote}/") :] not in heads:
                repo.store.compare_and_swap(ref, old, None)
        everything = set()
        for head in heads.values():
            everything |= _ancestors(repo, head)
        _sync_tags(other, repo, everything, "fetch")
    return result


# ---- push ----------------------------------------------------------------------------------------------
def push(
    repo: Repository,
    remote: str = "origin",
    branch: str | None = None,
    force: bool = False,
    *,
    progress: ProgressFn | None = None,
) -> SyncResult:
    """Send ``branch`` (default: the current one) to the remote: chunks, commits, then the branch by
    compare-and-swap. Refused when the remote branch moved since the last fetch, or when it is not an
    ancestor of ours, unless ``force``."""
    if not isinstance(force, bool):
        raise InvalidArgumentError("force", force, "must be True or False")
    url = remote_url(repo, remote)
    if branch is None:
        branch = repo.current_branch
        if branch is None:
            raise InvalidArgumentError("branch", None, "HEAD is detached: name the branch to push")
    validate_ref_name(branch, "branch")
    head = repo.refs.branch_head(branch)  # validated: a damaged branch is never pushed
    if head is None:
        raise RefNotFoundError(f"branch {branch!r} not found (nothing to push)")
    tracking_ref = f"{TRACKING_PREFIX}{remote}/{branch}"
    result = SyncResult(remote)
    with open_remote(url) as other:
        # the remote's gc must not free what this push writes before its branch names it
        with other.store.lock("gc", exclusive=False):
            seen = (repo.store.get_ref(tracking_ref) or "").strip() or None
            theirs_raw = other.store.get_ref(f"heads/{branch}")
            theirs = theirs_raw.strip() if theirs_raw is not None else None
            ours = _ancestors(repo, head)
            if theirs is not None and not force:
                # moved to a commit of our own branch (a push of ours that died before it could note it): no
                # one's work is lost by going on; moved anywhere else: refused
                if theirs != seen and theirs not in ours:
                    raise PushRejectedError(
                        f"push of {branch!r} to {remote!r} refused: the remote branch moved since the last fetch "
                        f"(now {theirs[:12]}); run `coral fetch {remote}` and `coral pull`, or push --force"
                    )
                if theirs not in ours:
                    raise PushRejectedError(
                        f"push of {branch!r} to {remote!r} refused: {remote}/{branch} ({theirs[:12]}) is not an "
                        f"ancestor of {branch} ({head[:12]}); pull first, or push --force"
                    )
            # only history under the remote's branches (as last fetched) is known complete there: a commit
            # object alone proves nothing (a killed push leaves commits whose parents never arrived)
            on_remote: set[str] = set()
            for known_head in [*tracking_refs(repo, remote).values(), theirs]:
                if is_commit_id(known_head) and repo.history.exists(known_head):
                    on_remote |= _ancestors(repo, known_head)
            have = on_remote.__contains__
            new = _missing_commits(repo, head, have)
            remote_pruned = {r[len("pruned/") :] for r in other.store.list_refs("pruned/")}
            known = _known_chunks(repo, _boundary(repo, new, have), lambda c: c in remote_pruned)
            result.add(
                _transfer(repo, other, new, known=known, with_weights=lambda c: not repo.is_pruned(c),
                          local=repo, progress=progress)
            )
            result.commits = len(new)
            for c in new:  # commits sent without their weights (pruned here) are marked there
                if repo.is_pruned(c):
                    other.store.compare_and_swap(f"pruned/{c}", None, "1")
            if theirs != head:
                why = f"push: {'forced ' if force else ''}from {repo!r}"
                if not other.refs.update(f"heads/{branch}", theirs_raw, head, theirs, head, why):
                    raise PushRejectedError(
                        f"push of {branch!r} to {remote!r} lost a race: another push moved the remote branch first "
                        f"(nothing was lost; objects sent stay for the retry); fetch, pull, then push again"
                    )
                result.refs[f"{remote}/{branch}"] = (theirs, head)
            if other.store.get_ref("HEAD") is None:  # never, for a repository opened as one; kept for safety
                other.store.compare_and_swap("HEAD", None, f"ref: heads/{branch}")
            _sync_tags(repo, other, ours, "push", force)
            _sync_documents(repo, other, ours, judge=repo)
    old = repo.store.get_ref(tracking_ref)
    if old != head:
        repo.store.compare_and_swap(tracking_ref, old, head)
    return result


# ---- pull ----------------------------------------------------------------------------------------------
def pull(
    repo: Repository, remote: str = "origin", branch: str | None = None, *, progress: ProgressFn | None = None
) -> SyncResult:
    """Fetch, then fast-forward ``branch`` (default: the current one) to ``remote/branch``.

    A branch with commits the remote lacks is refused (DivergedError): merge or push --force instead."""
    url = remote_url(repo, remote)
    if branch is None:
        branch = repo.current_branch
        if branch is None:
            raise InvalidArgumentError("branch", None, "HEAD is detached: name the branch to pull")
    validate_ref_name(branch, "branch")
    result = fetch(repo, remote, progress=progress, _url=url)
    target = repo.refs.read(f"{TRACKING_PREFIX}{remote}/{branch}")[1]
    if target is None:
        raise RefNotFoundError(f"remote {remote!r} has no branch {branch!r}")
    ref = f"heads/{branch}"
    for _ in range(_CAS_TRIES):
        raw, mine = repo.refs.read(ref)  # a damaged branch is refused (repair it with branch --force)
        if mine == target or (mine is not None and _is_ancestor(repo, target, mine)):
            break  # up to date, or ahead: nothing to take
        if mine is not None and not _is_ancestor(repo, mine, target):
            raise DivergedError(
                f"cannot pull {remote}/{branch}: local branch {branch!r} ({mine[:12]}) and {remote}/{branch} "
                f"({target[:12]}) have diverged (each has commits the other lacks); merge {remote}/{branch} "
                f"into it, or push --force to replace the remote's"
            )
        if repo.refs.update(ref, raw, target, mine, target, f"pull: fast-forward to {remote}/{branch}"):
            result.refs[branch] = (mine, target)
            break
    else:
        raise RefConflictError(f"branch {branch!r} kept moving during pull")
    with open_remote(url) as other:
        _sync_documents(other, repo, _ancestors(repo, repo.refs.branch_head(branch)), judge=repo)
    return result


# ---- clone ---------------------------------------------------------------------------------------------
def clone(
    url: str | os.PathLike[str],
    path: str | os.PathLike[str],
    branch: str | None = None,
    depth: int | None = None,
    *,
    progress: ProgressFn | None = None,
) -> Repository:
    """Create a repository at ``path`` from the one at ``url`` (remote ``origin``), checked out on ``branch``
    (default: the remote's). ``depth=1`` fetches the weights of only the newest checkpoint of each branch."""
    from .repository import Repository

    url = normalize_url(url)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidArgumentError("depth", depth, "must be a positive integer or None")
    if branch is not None:
        validate_ref_name(branch, "branch")
    target = Path(os.fspath(path)).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidArgumentError("path", str(target), "already exists and is not an empty folder")
    with open_remote(url) as other:
        head = other.store.get_ref("HEAD") or ""
        default = head[len("ref: heads/") :] if head.startswith("ref: heads/") else None
        heads = other.list_branches()
        if branch is not None and branch not in heads:
            raise RefNotFoundError(f"remote {url!r} has no branch {branch!r} (branches: {', '.join(heads) or 'none'})")
        checkout = branch or (default if default in heads else (heads[0] if heads else default or "main"))
    created = not target.exists()
    try:
        repo = Repository(target, init=True)
        try:
            update_config(repo, lambda doc: doc.setdefault("remotes", {}).update({"origin": {"url": url}}))
            fetch(repo, "origin", depth=depth, progress=progress)
            tip = repo.refs.read(f"{TRACKING_PREFIX}origin/{checkout}")[1]
            if tip is not None:
                repo.refs.update(f"heads/{checkout}", None, tip, None, tip, f"clone: from {url}")
            old = repo.store.get_ref("HEAD")
            new = f"ref: heads/{checkout}"
            repo.refs.update("HEAD", old, new, old and old.strip(), new, f"clone: checkout {checkout}", tip)
            with open_remote(url) as other:
                _sync_documents(other, repo, _ancestors(repo, tip), judge=repo)
        except BaseException:
            repo.close()
            raise
    except BaseException:
        shutil.rmtree(target if created else target / ".coral", ignore_errors=True)
        raise
    return repo


__all__ = [
    "SyncResult",
    "add_remote",
    "clone",
    "fetch",
    "fsck_remote",
    "list_remotes",
    "open_remote",
    "pull",
    "push",
    "remote_url",
    "remove_remote",
    "repair",
    "tracking_refs",
]

