"""The Repository: branches, tags, commits and lazy weight loading on top of the object store.

Writes happen in a fixed order (chunks, then the commit, then the ref by compare-and-swap), so a crash at
any instant leaves every earlier commit intact and at most unreferenced objects, which ``gc`` removes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import blake3
import numpy as np

from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import (
    AllocationError,
    AmbiguousRefError,
    CoralError,
    CorruptObjectError,
    InvalidArgumentError,
    InvalidNameError,
    ObjectNotFoundError,
    PrunedCommitError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RepositoryNotFoundError,
)
from ..objects.tensors import MAX_DELTA_DEPTH, ObjectStore, PendingWrites, TensorEntry, chunk_key, pack_bytes
from ..store.base import Store
from ..store.local import LocalStore
from ..store.registry import open_store
from . import diff as _diff
from . import merge as _merge
from . import remotes as _remotes
from .commit import Commit, CommitInfo, commit_key
from .jsonsafe import canonical_dumps, from_jsonable, to_jsonable
from .names import validate_ref_name, validate_tensor_name

log = logging.getLogger(__name__)

CORAL_DIR = ".coral"
DEFAULT_BRANCH = "main"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
_COMMIT_ID = re.compile(r"^[0-9a-f]{64}$")
_CAS_TRIES = 1000


def _wait_all_pending(pending: list[PendingWrites]) -> None:
    """Wait for every pending write; then raise the first failure."""
    first: BaseException | None = None
    for p in pending:
        try:
            p.wait()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once all have ended
            first = first or exc
    if first is not None:
        raise first


class Repository:
    """A repository of weights. ``Repository(path, init=True)`` creates it; ``Repository(path)`` opens it.

    ``path`` is a folder (the data lives in ``path/.coral``) or a store URL such as ``memory://name``.
    """

    def __init__(self, path: str | os.PathLike[str], init: bool = False, *, store: Store | None = None) -> None:
        self.path, self.store = self._open(path, init, store)
        self.objects = ObjectStore(self.store)
        self._commit_cache: dict[str, Commit] = {}
        self._last_commit: tuple[str, float] = ("", 0.0)  # (id, timestamp) of this handle's newest commit
        self._staged: dict[str, TensorEntry] = {}
        self._staged_meta: dict[str, WeightMetadata] = {}
        self._stage_token = uuid.uuid4().hex  # names this object's record of staged chunks in the store
        if init and self.store.get_ref("HEAD") is None:
            self.store.compare_and_swap("HEAD", None, f"ref: heads/{DEFAULT_BRANCH}")
            self.store.compare_and_swap("config", None, json.dumps({"format": 1}))
        if self.store.get_ref("HEAD") is None:
            raise RepositoryNotFoundError(f"{path!s} is not a Coral repository (run `coral init` or pass init=True)")

    @staticmethod
    def _open(path: Any, init: bool, store: Store | None) -> tuple[Path | None, Store]:
        if store is not None:
            return None, store
        text = os.fspath(path) if not isinstance(path, str) else path
        if "://" in text and not text.startswith("file://"):
            return None, open_store(text)
        root = Path(text[len("file://") :] if text.startswith("file://") else text).expanduser().resolve()
        coral_dir = root / CORAL_DIR
        if not coral_dir.is_dir():
            if not init:
                raise RepositoryNotFoundError(
                    f"{root} is not a Coral repository (no {CORAL_DIR} folder); use Repository(path, init=True)"
                )
            if root.exists() and not root.is_dir():
                raise InvalidArgumentError("path", str(root), "exists and is not a folder")
        return root, LocalStore(coral_dir)

    @property
    def repo_path(self) -> Path | None:
        """The repository's folder (alias of ``path``, as in the user guide)."""
        return self.path

    @classmethod
    def find(cls, start: str | os.PathLike[str] = ".") -> "Repository":
        """Open the repository at ``start`` or the nearest parent folder holding one (like git)."""
        here = Path(start).resolve()
        for cand in (here, *here.parents):
            if (cand / CORAL_DIR).is_dir():
                return cls(cand)
        raise RepositoryNotFoundError(f"no Coral repository at {here} or any parent folder")

    def close(self) -> None:
        self.store.release_staged(self._stage_token)
        self.objects.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Repository({str(self.path) if self.path else self.store.describe()!r})"

    # ---- refs --------------------------------------------------------------------------------------------
    @property
    def current_branch(self) -> str | None:
        head = self.store.get_ref("HEAD") or ""
        return head[len("ref: heads/") :] if head.startswith("ref: heads/") else None

    def _branch_head(self, branch: str) -> str | None:
        return self.store.get_ref(f"heads/{branch}")

    def head_commit(self) -> str | None:
        """Hash of the commit HEAD points at, or None in an empty repository."""
        head = self.store.get_ref("HEAD") or ""
        if head.startswith("ref: heads/"):
            return self._branch_head(head[len("ref: heads/") :])
        return head or None

    def list_branches(self) -> list[str]:
        return [name[len("heads/") :] for name in self.store.list_refs("heads/")]

    def create_branch(self, name: str, start: str | None = None) -> str:
        """Create branch ``name`` at ``start`` (default HEAD); returns its commit hash."""
        validate_ref_name(name, "branch")
        target = self.resolve(start) if start is not None else self.head_commit()
        if target is None:
            raise RefNotFoundError("cannot create a branch in an empty repository: commit first")
        if not self.store.compare_and_swap(f"heads/{name}", None, target):
            raise RefExistsError(f"branch {name!r} already exists")
        return target

    def delete_branch(self, name: str, force: bool = False) -> None:
        validate_ref_name(name, "branch")
        if name == self.current_branch:
            raise InvalidArgumentError("branch", name, "is checked out; switch to another branch first")
        cur = self._branch_head(name)
        if cur is None:
            raise RefNotFoundError(f"branch {name!r} not found")
        if not self.store.compare_and_swap(f"heads/{name}", cur, None):
            raise RefConflictError(f"branch {name!r} moved while deleting it")

    def switch(self, ref: str, create: bool = False) -> str:
        """Check out a branch (HEAD follows it), or detach HEAD at a tag/hash/``HEAD~N``."""
        if create:
            self.create_branch(ref)
        old = self.store.get_ref("HEAD")
        if _is_ref_name(ref) and self._branch_head(ref) is not None:  # HEAD~2, hashes: not branch names
            new = f"ref: heads/{ref}"
            target = self._branch_head(ref)
        elif isinstance(ref, str) and ref in self.list_branches() + [DEFAULT_BRANCH] and self.head_commit() is None:
            new, target = f"ref: heads/{ref}", None
        else:
            target = self.resolve(ref)
            new = target
        if not self.store.compare_and_swap("HEAD", old, new):
            raise RefConflictError("HEAD moved while switching")
        self._staged.clear()
        self.store.release_staged(self._stage_token)
        return target or ""

    checkout = switch

    def tag_version(
        self,
        name: str,
        description: str | None = None,
        commit_ref: str | None = None,
        model_card: str | Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Tag a commit (default HEAD) with a description and optional model card; returns the commit hash."""
        validate_ref_name(name, "tag")
        target = self.resolve(commit_ref) if commit_ref is not None else self.head_commit()
        if target is None:
            raise RefNotFoundError("cannot tag in an empty repository: commit first")
        doc = {
            "commit": target,
            "description": description,
            "model_card": model_card,
            "time": time.time(),
            "metadata": dict(metadata or {}),
        }
        if not self.store.compare_and_swap(f"tags/{name}", None, canonical_dumps(doc).decode()):
            raise RefExistsError(f"tag {name!r} already exists")
        return target

    def delete_tag(self, name: str) -> None:
        cur = self.store.get_ref(f"tags/{validate_ref_name(name, 'tag')}")
        if cur is None:
            raise RefNotFoundError(f"tag {name!r} not found")
        self.store.compare_and_swap(f"tags/{name}", cur, None)

    def move_tag(self, name: str, commit_ref: str, description: str | None = None) -> None:
        """Point an existing tag (e.g. ``best-...``) at another commit, creating it if missing."""
        validate_ref_name(name, "tag")
        target = self.resolve(commit_ref)
        for _ in range(_CAS_TRIES):
            cur = self.store.get_ref(f"tags/{name}")
            doc = json.loads(cur) if cur else {}
            doc.update({"commit": target, "time": time.time()})
            if description is not None:
                doc["description"] = description
            doc.setdefault("description", None)
            doc.setdefault("model_card", None)
            doc.setdefault("metadata", {})
            if self.store.compare_and_swap(f"tags/{name}", cur, canonical_dumps(doc).decode()):
                return
        raise RefConflictError(f"tag {name!r} kept moving")

    def list_tags(self) -> list[dict[str, Any]]:
        """Every tag as ``{"name", "commit", "description", "model_card", "time", "metadata"}``."""
        out = []
        for ref, value in self.store.list_refs("tags/").items():
            try:
                doc = _parse_tag(ref, value)
            except CorruptObjectError as exc:  # listed elsewhere by fsck; one bad tag must not hide the rest
                log.warning("skipping damaged tag: %s", exc)
                continue
            doc["name"] = ref[len("tags/") :]
            out.append(doc)
        return out

    def resolve(self, ref: str | None = None) -> str:
        """Resolve a branch, tag, full or short hash, ``HEAD``, ``HEAD~N`` or ``name~N`` to a commit hash."""
        if ref is None:
            ref = "HEAD"
        if not isinstance(ref, str) or not ref or "\x00" in ref:
            raise InvalidArgumentError("ref", ref, "expected a branch, tag or commit hash")
        base, steps = ref, 0
        m = re.match(r"^(.*?)((?:~\d*|\^)+)$", ref)
        if m:
            base = m.group(1) or "HEAD"
            for part in re.findall(r"~\d*|\^", m.group(2)):
                steps += 1 if part in ("^", "~") else int(part[1:])
        commit = self._resolve_base(base)
        for _ in range(steps):
            parents = self._read_commit(commit).parents
            if not parents:
                raise RefNotFoundError(f"{ref!r} goes past the first commit")
            commit = parents[0]
        return commit

    def _resolve_base(self, ref: str) -> str:
        if ref == "HEAD":
            head = self.head_commit()
            if head is None:
                raise RefNotFoundError("HEAD has no commits yet")
            return _commit_id_of("HEAD", head)
        if not re.search(r"[\x00]|\.\.", ref) and re.fullmatch(r"[A-Za-z0-9._\-/]+", ref):
            branch = self.store.get_ref(f"heads/{ref}")
            if branch is not None:
                return _commit_id_of(f"heads/{ref}", branch)
            tag = self.store.get_ref(f"tags/{ref}")
            if tag is not None:
                return _parse_tag(f"tags/{ref}", tag)["commit"]
            tracking = self.store.get_ref(f"remotes/{ref}") if "/" in ref else None  # origin/main
            if tracking is not None:
                return _commit_id_of(f"remotes/{ref}", tracking)
        if _HEX.fullmatch(ref):
            if len(ref) == 64:
                if self.store.has(commit_key(ref)):
                    return ref
            else:
                matches = [c for c in self._commit_ids(prefix=ref[:2]) if c.startswith(ref)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise AmbiguousRefError(f"short hash {ref!r} is ambiguous: {', '.join(m[:12] for m in matches)}")
        raise RefNotFoundError(f"unknown ref {ref!r} (not a branch, tag or commit hash)")

    def _commit_ids(self, prefix: str = "") -> list[str]:
        out = []
        for key in self.store.list(f"commits/{prefix}" if len(prefix) >= 2 else "commits/"):
            parts = key.split("/")
            if len(parts) == 3:
                out.append(parts[1] + parts[2])
        return out

    # ---- commits -----------------------------------------------------------------------------------------
    def _read_commit(self, commit_id: str) -> Commit:
        if not isinstance(commit_id, str) or not _COMMIT_ID.fullmatch(commit_id):
            raise CorruptObjectError(repr(commit_id)[:80], "is not a commit id (a damaged or hostile ref or parent)")
        cached = self._commit_cache.get(commit_id)
        if cached is not None:
            return cached
        try:
            raw = self.store.get(commit_key(commit_id))
        except ObjectNotFoundError:
            raise RefNotFoundError(f"commit {commit_id} not found") from None
        commit = Commit.from_bytes(commit_id, raw)
        # commits are immutable and were hash-checked just now: walks of history (gc, log, retention) reuse them
        if len(self._commit_cache) >= 4096:
            self._commit_cache.pop(next(iter(self._commit_cache)))
        self._commit_cache[commit_id] = commit
        return commit

    def get_commit(self, ref: str | None = None) -> Commit:
        return self._read_commit(self.resolve(ref))

    def is_pruned(self, commit_id: str) -> bool:
        return self.store.get_ref(f"pruned/{commit_id}") is not None

    def stage_weights(self, weights: Mapping[str, Any] | Iterable[WeightTensor]) -> dict[str, str]:
        """Write the weights' chunks now (deduplicated) and stage them for the next commit.

        Accepts ``{name: WeightTensor | ndarray}`` or an iterable of named WeightTensors. Returns
        ``{name: "stored"}`` for every staged tensor. The next ``commit`` snapshots exactly the staged tensors.
        """
        items = _normalize_weights(weights)
        arrays = [(name, wt.data) for name, wt in items.items()]
        with self.store.lock("gc", exclusive=False):
            entries, _written = self.objects.write_tensors(arrays)
            # until commit(), a gc in another process must keep these chunks (released on commit/close)
            kept = {**self._staged, **entries}
            self.store.hold_staged(self._stage_token, (c for e in kept.values() for c in e.chunks))
        status = {}
        for name, entry in entries.items():
            entry.layer_type = items[name].metadata.layer_type
            status[name] = "stored"
            self._staged[name] = entry
            self._staged_meta[name] = items[name].metadata
        return status

    @property
    def staged(self) -> dict[str, TensorEntry]:
        return dict(self._staged)

    def commit(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        allow_empty: bool = False,
        parents: list[str] | None = None,
    ) -> str:
        """Commit the staged tensors on the current branch; returns the commit hash."""
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        if not self._staged and not allow_empty:
            raise CoralError("nothing staged: call stage_weights(weights) before commit()")
        tree = dict(self._staged)
        commit_id = self._commit_tree(tree, message, dict(metadata or {}), parents)
        self._staged.clear()
        self._staged_meta.clear()
        self.store.release_staged(self._stage_token)
        return commit_id

    def commit_weights(
        self,
        weights: Mapping[str, Any] | Iterable[WeightTensor],
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        allow_empty: bool = False,
    ) -> str:
        """Write ``weights`` and commit exactly them in one step, without touching the shared staging area.

        Holds the writers' lock from the first chunk to the ref update, so a concurrent ``gc`` can never
        free a chunk of a commit being made. Faster than ``stage_weights`` + ``commit``: the commit object is
        written while the chunks are still being fsynced. Used by the training layer (also from background
        threads).
        """
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        items = _normalize_weights(weights)
        if not items and not allow_empty:
            raise InvalidArgumentError("weights", weights, "holds no tensors: nothing to commit (allow_empty=True)")
        with self.store.lock("gc", exclusive=False):
            entries, _written, pending = self.objects.write_tensors_deferred(
                [(name, wt.data) for name, wt in items.items()]
            )
            for name, entry in entries.items():
                entry.layer_type = items[name].metadata.layer_type
            return self._commit_tree(entries, message, dict(metadata or {}), None, [pending], check_stored=False)

    def _commit_tree(
        self,
        tree: dict[str, TensorEntry],
        message: str,
        metadata: dict[str, Any],
        extra_parents: list[str] | None,
        pending: list[PendingWrites] | None = None,
        check_stored: bool = True,
    ) -> str:
        """Write the commit object, wait for the tree's chunks to be durable, then move the ref (CAS).

        The commit object is written while ``pending`` chunks are still being fsynced: nothing names it
        until the ref moves, and the ref moves only after every chunk and the commit are on disk."""
        branch = self.current_branch
        ref = f"heads/{branch}" if branch else "HEAD"
        with self.store.lock("gc", exclusive=False):
            durable = False
            for _ in range(_CAS_TRIES):
                head = self.store.get_ref(ref)
                parents = [head] if head else []
                for p in extra_parents or []:
                    if p not in parents:
                        parents.append(p)
                # a child is always newer than its parents, so log()'s time order is the chain's order even
                # when a racing writer took its clock reading first and then lost the compare-and-swap
                stamp = max([time.time(), *(self._parent_time(p) + 1e-6 for p in parents)])
                commit = Commit(parents, message, metadata, tree, stamp)
                raw = commit.to_bytes()
                cid = blake3.blake3(raw).hexdigest()  # = commit.id, without serializing twice
                self.store.put(commit_key(cid), raw)
                if not durable:
                    _wait_all_pending(pending or [])
                    if check_stored:  # commit_weights held the writers' lock all along: nothing was freed
                        self._check_tree_stored(tree)
                    durable = True
                if self.store.compare_and_swap(ref, head, cid):
                    self._last_commit = (cid, stamp)  # the next commit's parent: no need to read it back
                    return cid
                time.sleep(0.001)
        raise RefConflictError(f"could not update {ref!r}: too many concurrent writers")

    def _check_tree_stored(self, tree: dict[str, TensorEntry]) -> None:
        """A gc between stage_weights() and commit() may have freed staged chunks: never commit a dangling tree."""
        for name, entry in tree.items():
            for chunk in entry.chunks:
                if not self.store.has(chunk_key(chunk)):
                    raise ObjectNotFoundError(
                        f"staged chunk {chunk} of tensor {name!r} is no longer in the store (a gc ran "
                        "between stage_weights() and commit()); stage the weights again"
                    )

    def _parent_time(self, commit_id: str) -> float:
        if self._last_commit[0] == commit_id:
            return self._last_commit[1]
        try:
            return self._read_commit(commit_id).timestamp
        except CoralError:  # a damaged parent must not stop new checkpoints (fsck reports it)
            return 0.0

    def log(self, branch: str | None = None, limit: int | None = None) -> list[CommitInfo]:
        """Commits reachable from ``branch`` (default HEAD), newest first."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidArgumentError("limit", limit, "must be a non-negative integer")
        try:
            start = self.resolve(branch) if branch is not None else self.head_commit()
        except RefNotFoundError:
            if branch is None:
                return []
            raise
        if start is None:
            return []
        seen: set[str] = set()
        frontier = [start]
        infos: list[CommitInfo] = []
        while frontier:
            cid = frontier.pop()
            if cid in seen:
                continue
            seen.add(cid)
            c = self._read_commit(cid)
            infos.append(
                CommitInfo(
                    cid, c.parents, c.timestamp, c.message, c.metadata, self.is_pruned(cid),
                    len(c.tree), sum(e.nbytes for e in c.tree.values()),
                )
            )
            frontier.extend(c.parents)
        infos.sort(key=lambda i: i.timestamp, reverse=True)
        return infos[:limit] if limit is not None else infos

    def get_weights(self, ref: str | None = None, names: Iterable[str] | None = None) -> dict[str, WeightTensor]:
        """The tensors of a commit as lazy WeightTensors: bytes are read (and verified) on first ``.data``."""
        return {name: self._lazy(name, entry) for name, entry in self._selected_tree(ref, names).items()}

    def _selected_tree(self, ref: str | None, names: Iterable[str] | None) -> dict[str, TensorEntry]:
        cid = self.resolve(ref)
        if self.is_pruned(cid):
            raise PrunedCommitError(f"commit {cid[:12]} was pruned: its weights were freed (log still shows it)")
        tree = self._read_commit(cid).tree
        if names is not None:
            wanted = list(names) if not isinstance(names, str) else [names]
            missing = [n for n in wanted if n not in tree]
            if missing:
                raise RefNotFoundError(f"tensor(s) {missing} not in commit {cid[:12]}")
            tree = {n: tree[n] for n in wanted}
        return tree

    def _lazy(self, name: str, entry: TensorEntry) -> WeightTensor:
        meta = WeightMetadata(name, entry.shape, entry.dtype, layer_type=entry.layer_type)
        return WeightTensor(
            metadata=meta, loader=lambda: _allocating({name: entry}, lambda: self.objects.read_tensor(name, entry))
        )

    def load_arrays(
        self, ref: str | None = None, names: Iterable[str] | None = None, *, mmap: bool = False
    ) -> dict[str, np.ndarray]:
        """Eagerly read tensors of a commit as numpy arrays (all their chunks are read in parallel).

        ``mmap=True``: tensors stored as raw chunks (the newest checkpoint's) are mapped from the chunk
        files instead of copied: their pages are the page cache's, shared with other processes loading
        the same checkpoint, and a write to the array stays private to it. Every chunk is still
        BLAKE3-checked before this returns. Falls back to reading where mapping is not available.
        """
        if not isinstance(mmap, bool):
            raise InvalidArgumentError("mmap", mmap, "must be True or False")
        tree = self._selected_tree(ref, names)
        if mmap:
            return _allocating(tree, lambda: self.objects.map_tensors(tree.items()))
        return _allocating(tree, lambda: self.objects.read_tensors(tree.items()))

    # ---- diff / merge ------------------------------------------------------------------------------------
    def diff(self, a: str, b: str | None = None) -> dict[str, Any]:
        """Compare two commits: changed/added/removed names, and per changed tensor similarity figures."""
        ca, cb = self.resolve(a), self.resolve(b)
        ta, tb = self._read_commit(ca).tree, self._read_commit(cb).tree
        result = _diff.tree_diff(ta, tb)
        stats = {}
        for name in result["changed"]:
            ea, eb = ta[name], tb[name]
            if ea.shape == eb.shape and not self.is_pruned(ca) and not self.is_pruned(cb):
                stats[name] = _diff.tensor_stats(
                    self.objects.read_tensor(name, ea), self.objects.read_tensor(name, eb)
                )
        result["stats"] = stats
        result["from"], result["to"] = ca, cb
        return result

    def _is_ancestor(self, ancestor: str, of: str) -> bool:
        seen: set[str] = set()
        frontier = [of]
        while frontier:
            c = frontier.pop()
            if c == ancestor:
                return True
            if c in seen:
                continue
            seen.add(c)
            frontier.extend(self._read_commit(c).parents)
        return False

    def merge_base(self, a: str, b: str) -> str | None:
        ancestors: set[str] = set()
        frontier = [self.resolve(a)]
        while frontier:
            c = frontier.pop()
            if c not in ancestors:
                ancestors.add(c)
                frontier.extend(self._read_commit(c).parents)
        frontier, seen = [self.resolve(b)], set()
        best: tuple[float, str] | None = None
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            if c in ancestors:
                t = self._read_commit(c).timestamp
                if best is None or t > best[0]:
                    best = (t, c)
                continue
            frontier.extend(self._read_commit(c).parents)
        return best[1] if best else None

    def merge(
        self,
        other: str,
        strategy: str = "average",
        weights: list[float] | tuple[float, ...] | None = None,
        message: str | None = None,
        *,
        on_conflict: str | None = None,
    ) -> str:
        """Merge ``other`` into the current branch in weight space; returns the two-parent merge commit.

        ``strategy``: ``average``, ``weighted`` (``weights=[w_ours, w_theirs]``) or ``task_arithmetic``
        (base + w_ours*(ours-base) + w_theirs*(theirs-base), weights default [1, 1]). Tensors missing on one
        side or with different shapes raise MergeConflictError unless ``on_conflict`` is ``ours``/``theirs``.
        """
        ours_id = self.head_commit()
        if ours_id is None:
            raise RefNotFoundError("cannot merge into an empty branch")
        theirs_id = self.resolve(other)
        if theirs_id == ours_id or self._is_ancestor(theirs_id, ours_id):
            log.info("merge: %s is already contained in HEAD; nothing to merge", other)
            return ours_id  # already up to date, as git says
        base_id = self.merge_base(ours_id, theirs_id) if strategy == "task_arithmetic" else None
        if strategy == "task_arithmetic" and base_id is None:
            raise CoralError(f"no common ancestor of HEAD and {other!r}: task_arithmetic needs one")
        ours = self.get_weights(ours_id)
        theirs = self.get_weights(theirs_id)
        base = self.get_weights(base_id) if base_id else None
        merged = _merge.merge_weights(ours, theirs, strategy, weights, base, on_conflict)
        self.stage_weights(merged)
        msg = message or f"Merge {other} into {self.current_branch or 'HEAD'} ({strategy})"
        meta = {"merge": {"strategy": strategy, "weights": list(weights) if weights else None, "other": theirs_id}}
        return self.commit(msg, meta, parents=[theirs_id])

    # ---- retention, gc, fsck, stats ----------------------------------------------------------------------
    def prune(self, commit: str) -> str:
        """Free a commit's weights but keep the commit (log shows it as pruned). Run ``gc`` to reclaim space."""
        cid = self.resolve(commit)
        self.store.compare_and_swap(f"pruned/{cid}", None, "1")
        return cid

    def _all_ref_targets(self, strict: bool = False) -> set[str]:
        """Commits the refs name; ``strict`` (gc) raises on a damaged tag instead of skipping it."""
        targets = set()
        for name, value in self.store.list_refs("heads/").items():
            targets.add(value)
        targets.update(self.store.list_refs("remotes/").values())  # fetched commits stay until the remote drops them
        for name, value in self.store.list_refs("tags/").items():
            try:
                targets.add(_parse_tag(name, value)["commit"])
            except CorruptObjectError:
                if strict:
                    raise
        head = self.store.get_ref("HEAD") or ""
        if head and not head.startswith("ref: "):
            targets.add(head)
        return targets

    def _reachable(self, strict: bool = False) -> set[str]:
        """Commits reachable from any ref. ``strict`` (gc) refuses a missing or unreadable commit: deleting
        "unreachable" objects behind a hole in history would destroy every older checkpoint."""
        seen: set[str] = set()
        frontier = list(self._all_ref_targets(strict))
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            try:
                frontier.extend(self._read_commit(c).parents)
            except RefNotFoundError:
                if strict:
                    raise CorruptObjectError(c, "commit is reachable from a ref but missing; gc deleted nothing "
                                                "(run fsck)") from None
                continue
        return seen

    def _live_chunks(self, commits: Iterable[str]) -> set[str]:
        live: set[str] = set()
        for cid in commits:
            if self.is_pruned(cid):
                continue
            for entry in self._read_commit(cid).tree.values():
                live.update(entry.chunks)
        # delta bases of live chunks stay alive too
        frontier = list(live)
        while frontier:
            c = frontier.pop()
            try:
                base = self.objects.header(c).base
            except (ObjectNotFoundError, ValueError):
                continue
            if base and base not in live:
                live.add(base)
                frontier.append(base)
        return live

    def gc(self) -> dict[str, int]:
        """Delete unreachable commits, chunks no live commit needs (keeping delta bases), and temp files."""
        self._commit_cache.clear()
        removed = freed = 0
        with self.store.lock("gc", exclusive=True):
            reachable = self._reachable(strict=True)
            live = self._live_chunks(reachable)
            live.update(c for e in self._staged.values() for c in e.chunks)  # staged here, not yet committed
            live.update(self.store.staged_elsewhere())  # staged by live writers in other processes
            for key in list(self.store.list("chunks/")):
                parts = key.split("/")
                cid = parts[1] + parts[2] if len(parts) == 3 else ""
                if cid not in live:
                    freed += self.store.size(key)
                    self.store.delete(key)
                    removed += 1
            for cid in self._commit_ids():
                if cid not in reachable:
                    freed += self.store.size(commit_key(cid))
                    self.store.delete(commit_key(cid))
                    removed += 1
            for name in self.store.list_refs("pruned/"):
                if name[len("pruned/") :] not in reachable:
                    self.store.compare_and_swap(name, self.store.get_ref(name), None)
            temp = 0
            if isinstance(self.store, LocalStore):  # crash leftovers only: live writers hold theirs locked
                temp, temp_bytes = self.store.remove_temp_files()
                freed += temp_bytes
        self.objects._cache.clear()
        return {"objects_removed": removed, "bytes_freed": freed, "temp_files_removed": temp}

    def fsck(self) -> dict[str, Any]:
        """Verify every reachable commit and every chunk a live commit needs; report damage by name."""
        self._commit_cache.clear()  # fsck re-reads and re-verifies every commit from the store
        errors: list[str] = []
        checked = 0
        reachable: set[str] = set()
        frontier = list(self._all_ref_targets())
        for name, value in self.store.list_refs("heads/").items():
            if not _COMMIT_ID.fullmatch(value) or not self.store.has(commit_key(value)):
                errors.append(f"branch {name[6:]!r} points at missing commit {value[:80]!r}")
        for name, value in self.store.list_refs("tags/").items():
            try:
                _parse_tag(name, value)
            except CorruptObjectError as exc:
                errors.append(f"tag {name[5:]!r}: {exc}")
        head = self.store.get_ref("HEAD") or ""
        if head.startswith("ref: heads/"):
            try:
                validate_ref_name(head[len("ref: heads/") :], "HEAD branch")
            except CoralError as exc:
                errors.append(f"HEAD: {exc}")
        bad_chunks: dict[str, str] = {}
        while frontier:
            c = frontier.pop()
            if c in reachable:
                continue
            reachable.add(c)
            try:
                commit = self._read_commit(c)
            except (CoralError, ValueError) as exc:
                errors.append(f"commit {c}: {exc}")
                continue
            frontier.extend(commit.parents)
            if self.is_pruned(c):
                continue
            for tname, entry in commit.tree.items():
                for chunk in entry.chunks:
                    if chunk not in bad_chunks:  # each unique chunk is verified once
                        try:
                            self.objects.verify_chunk(chunk)
                            checked += 1
                            bad_chunks[chunk] = ""
                        except CorruptObjectError as exc:
                            bad_chunks[chunk] = str(exc)
                        except ObjectNotFoundError:
                            bad_chunks[chunk] = f"chunk {chunk} is missing"
                    if bad_chunks[chunk]:
                        errors.append(f"commit {c[:12]} tensor {tname!r}: {bad_chunks[chunk]}")
                    elif entry.offset is not None:  # a packed tensor must lie inside its pack
                        end = entry.offset + entry.nbytes
                        if end > self.objects.header(chunk).length:
                            errors.append(f"commit {c[:12]} tensor {tname!r}: bytes up to {end} lie outside its pack")
        live = self._live_chunks(reachable) if not errors else set()
        unreferenced = []
        if not errors:
            for key in self.store.list("chunks/"):
                parts = key.split("/")
                if len(parts) == 3 and parts[1] + parts[2] not in live:
                    unreferenced.append(parts[1] + parts[2])
            # commit objects no ref reaches (a crash between writing a commit and moving its branch)
            unreferenced += [c for c in self._commit_ids() if c not in reachable]
        temp = len(self.store.temp_files()) if isinstance(self.store, LocalStore) else 0
        return {
            "ok": not errors,
            "errors": sorted(set(errors)),
            "commits": len(reachable),
            "chunks_checked": checked,
            "unreferenced_objects": len(unreferenced),
            "temp_files": temp,
        }

    def stats(self) -> dict[str, Any]:
        """Logical bytes (every live commit's tensors), unique bytes after dedup, stored bytes on disk."""
        reachable = self._reachable()
        logical = 0
        unique: dict[str, int] = {}
        commits = 0
        for cid in reachable:
            commits += 1
            if self.is_pruned(cid):
                continue
            for entry in self._read_commit(cid).tree.values():
                logical += entry.nbytes
                if entry.digest is not None:  # a packed small tensor counts once per distinct content
                    unique[f"{entry.dtype}:{entry.digest}"] = entry.nbytes
                    continue
                remaining = entry.nbytes
                for chunk in entry.chunks:
                    size = min(remaining, 4 * 1024 * 1024)
                    unique[chunk] = size
                    remaining -= size
        stored = 0
        objects = 0
        for key in self.store.list("chunks/"):
            stored += self.store.size(key)
            objects += 1
        unique_bytes = sum(unique.values())
        return {
            "commits": commits,
            "objects": objects,
            "logical_bytes": logical,
            "unique_bytes": unique_bytes,
            "stored_bytes": stored,
            "dedup_ratio": logical / unique_bytes if unique_bytes else 1.0,
            "compression_ratio": unique_bytes / stored if stored else 1.0,
            "total_ratio": logical / stored if stored else 1.0,
        }

    def chunk_sizes(self, commit: str | None = None) -> dict[str, dict[str, int]]:
        """Per tensor of a commit: logical bytes and stored bytes (for ``coral du``/``show``)."""
        cid = self.resolve(commit)
        out = {}
        tree = self._read_commit(cid).tree
        shared = pack_bytes(tree)
        for name, entry in tree.items():
            stored = 0
            for chunk in entry.chunks:
                try:
                    size = self.store.size(chunk_key(chunk))
                except ObjectNotFoundError:
                    continue
                # a pack's cost is split among its tensors by their sizes
                stored += size * entry.nbytes // shared[chunk] if entry.packed else size
            out[name] = {"logical": entry.nbytes, "stored": stored}
        return out

    def repack(self, branch: str | None = None, max_commits: int | None = None) -> dict[str, int]:
        """Re-encode older chunks as deltas against the same place in the next newer commit (reverse deltas).

        The newest commit of every branch stays delta-free, so the checkpoint loaded most often needs no
        chain walk; ids do not change, so history is untouched. A raw chunk that cannot become a delta
        (chain bound reached, no counterpart) is compressed as a keyframe instead. With ``max_commits`` only
        the newest commits along first parents are visited, so the cost does not grow with history.
        Chunks are re-encoded in parallel. Returns ``{"chunks": n, "bytes_saved": b}``.
        """
        heads = {v for v in self.store.list_refs("heads/").values()}
        protected: set[str] = set()
        for h in heads:
            if not self.is_pruned(h):
                for e in self._read_commit(h).tree.values():
                    protected.update(e.chunks)
        more: Iterator[str] = iter(())
        if max_commits is None:
            all_ids = [i.hash for i in self.log(branch) if not i.pruned]
        else:
            more = self._first_parent_ids(branch)
            all_ids = list(itertools.islice(more, max_commits + 2))
        ids = all_ids if max_commits is None else all_ids[: max_commits + 1]
        trees: dict[str, dict[str, TensorEntry]] = {}

        def tree(cid: str) -> dict[str, TensorEntry]:
            if cid not in trees:
                trees[cid] = self._read_commit(cid).tree
            return trees[cid]

        def commit_at(j: int) -> str | None:
            while len(all_ids) <= j:
                nxt = next(more, None)
                if nxt is None:
                    return None
                all_ids.append(nxt)
            return all_ids[j]

        def height(k: int, name: str, idx: int, chunk: str) -> int:
            """How many older deltas chain through ``chunk`` (counted up to MAX_DELTA_DEPTH + 1): walk back
            version by version of this tensor chunk, past commits where it is unchanged."""
            n, cur, j = 0, chunk, k + 2
            while n <= MAX_DELTA_DEPTH:
                while True:
                    cid = commit_at(j)
                    if cid is None:
                        return n
                    e = tree(cid).get(name)
                    if e is None or len(e.chunks) <= idx:
                        return n
                    if e.chunks[idx] != cur:
                        break
                    j += 1
                prev = e.chunks[idx]
                try:
                    if self.objects.header(prev).base != cur:
                        return n
                except (ObjectNotFoundError, ValueError):
                    return n
                n, cur, j = n + 1, prev, j + 1
            return n

        def run(task: tuple[str, str | None, str, int]) -> int:
            co, base, dtype, h = task
            try:
                return self.objects.reencode_delta(co, base, dtype, height=h)
            except ObjectNotFoundError:
                return 0

        done = saved = 0
        with self.store.lock("gc", exclusive=False):
            for k, (newer, older) in enumerate(zip(ids, ids[1:])):
                tn, to = tree(newer), tree(older)
                tasks: dict[str, tuple[str, str | None, str, int]] = {}
                in_chains: set[str] = set()  # chunks some task reads as (part of) its base
                for name, eo in to.items():
                    en = tn.get(name)
                    same_shape = en is not None and en.dtype == eo.dtype and len(en.chunks) == len(eo.chunks)
                    for idx, co in enumerate(eo.chunks):
                        cn = en.chunks[idx] if same_shape and en is not None else None
                        if co == cn or co in protected or co in tasks:
                            continue
                        try:
                            if self.objects.header(co).base is not None:
                                continue
                            base: str | None = None
                            h = 0
                            if cn is not None:
                                chain_n = [cn, *self.objects.chain(cn)]
                                h = height(k, name, idx, co)
                                # keep chains bounded: the longest chain through ``co`` after re-encoding
                                if h + len(chain_n) <= MAX_DELTA_DEPTH:
                                    base = cn
                                    in_chains.update(chain_n)
                        except ObjectNotFoundError:
                            continue
                        tasks[co] = (co, base, eo.dtype, h)
                # chunks no other task's base depends on are re-encoded in parallel; the rest one by one
                parallel = [t for co, t in tasks.items() if co not in in_chains]
                serial = [t for co, t in tasks.items() if co in in_chains]
                gains = list(self.objects._pool.map(run, parallel)) + [run(t) for t in serial]
                done += sum(1 for g in gains if g)
                saved += sum(gains)
        return {"chunks": done, "bytes_saved": saved}

    def _first_parent_ids(self, branch: str | None) -> Iterator[str]:
        """Unpruned commits from ``branch`` (default HEAD) back along first parents, read lazily."""
        try:
            cur: str | None = self.resolve(branch) if branch is not None else self.head_commit()
        except RefNotFoundError:
            if branch is None:
                return
            raise
        seen: set[str] = set()
        while cur is not None and cur not in seen:
            seen.add(cur)
            if not self.is_pruned(cur):
                yield cur
            parents = self._read_commit(cur).parents
            cur = parents[0] if parents else None

    # ---- remotes (logic in remotes.py) -------------------------------------------------------------------
    def add_remote(self, name: str, url: str | os.PathLike[str]) -> str:
        """Configure remote ``name`` at ``url`` (a folder or store URL holding a Coral repository)."""
        return _remotes.add_remote(self, name, url)

    def remove_remote(self, name: str) -> None:
        """Forget remote ``name`` and its remote-tracking branches."""
        _remotes.remove_remote(self, name)

    def list_remotes(self) -> dict[str, str]:
        """``{name: url}`` of the configured remotes."""
        return _remotes.list_remotes(self)

    def fetch(self, remote: str = "origin", **kwargs: Any) -> _remotes.SyncResult:
        """Download the remote's branches (as ``origin/main``), commits, chunks and tags."""
        return _remotes.fetch(self, remote, **kwargs)

    def push(self, remote: str = "origin", branch: str | None = None, force: bool = False, **kwargs: Any) -> _remotes.SyncResult:
        """Send a branch (default: the current one); refused if the remote branch moved, unless ``force``."""
        return _remotes.push(self, remote, branch, force, **kwargs)

    def pull(self, remote: str = "origin", branch: str | None = None, **kwargs: Any) -> _remotes.SyncResult:
        """Fetch, then fast-forward the branch; a diverged branch is refused."""
        return _remotes.pull(self, remote, branch, **kwargs)

    @classmethod
    def clone(cls, url: str | os.PathLike[str], path: str | os.PathLike[str], branch: str | None = None,
              depth: int | None = None, **kwargs: Any) -> "Repository":
        """A new repository at ``path`` from ``url`` (remote ``origin``); ``depth=1``: newest weights only."""
        return _remotes.clone(url, path, branch, depth, **kwargs)

    # ---- small mutable documents (history, index) --------------------------------------------------------
    def read_document(self, name: str) -> Any:
        raw = self.store.get_ref(f"meta/{name}")
        return None if raw is None else _parse_document(f"meta/{name}", raw)

    def update_document(self, name: str, fn: Any) -> Any:
        """Atomically replace document ``name`` with ``fn(old)`` (compare-and-swap retry loop)."""
        key = f"meta/{name}"
        for _ in range(_CAS_TRIES):
            raw = self.store.get_ref(key)
            new = fn(None if raw is None else _parse_document(key, raw))
            # NaN/inf metrics are legal values: tag them like commit metadata does
            text = canonical_dumps(to_jsonable(new, f"document {name!r}")).decode()
            if self.store.compare_and_swap(key, raw, text):
                return new
            time.sleep(0.001)
        raise RefConflictError(f"document {name!r} kept changing")


def _allocating(tree: Mapping[str, TensorEntry], read: Any) -> Any:
    """Run ``read``; a MemoryError (a manifest claiming more bytes than can be allocated) names the tensors."""
    try:
        return read()
    except MemoryError:
        big = max(tree.items(), key=lambda kv: kv[1].nbytes)
        raise AllocationError(
            f"cannot allocate {sum(e.nbytes for e in tree.values())} bytes to load {len(tree)} tensor(s) "
            f"(largest {big[0]!r}: shape {big[1].shape}, {big[1].dtype}); the manifest may be damaged or hostile"
        ) from None


def _commit_id_of(ref: str, value: str) -> str:
    """A ref's value must be a 64-hex commit id; anything else (a path, NUL, junk) is damage, not a lookup."""
    if not _COMMIT_ID.match(value):
        raise CorruptObjectError(f"ref {ref}", f"does not hold a commit id: {value[:80]!r}")
    return value


def _parse_tag(key: str, raw: str) -> dict[str, Any]:
    """A tag document; anything but an object naming a 64-hex commit is a CorruptObjectError naming the tag."""
    doc = _parse_document(key, raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("commit"), str) or not _COMMIT_ID.match(doc["commit"]):
        raise CorruptObjectError(f"ref {key}", "tag document does not name a commit")
    return doc


def _parse_document(key: str, raw: str) -> Any:
    """A stored JSON document (history, tag); damaged or hostile text is a CorruptObjectError naming the ref."""
    try:
        return from_jsonable(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise CorruptObjectError(f"ref {key}", f"not a valid JSON document: {exc}") from None


def _is_ref_name(name: Any) -> bool:
    try:
        validate_ref_name(name)
    except InvalidNameError:
        return False
    return True


def _normalize_weights(weights: Any) -> dict[str, WeightTensor]:
    out: dict[str, WeightTensor] = {}
    if isinstance(weights, Mapping):
        pairs = list(weights.items())
    elif isinstance(weights, Iterable):
        pairs = [(getattr(w, "name", None), w) for w in weights]
    else:
        raise InvalidArgumentError("weights", type(weights).__name__, "expected a dict of name -> WeightTensor")
    for name, value in pairs:
        if not isinstance(name, str):
            raise InvalidArgumentError("weights", name, "tensor names must be strings")
        validate_tensor_name(name)
        if isinstance(value, WeightTensor):
            wt = value
            if wt.metadata.name != name:
                wt = WeightTensor(wt.data, WeightMetadata(name, wt.shape, wt.metadata.dtype, wt.metadata.layer_type))
        elif isinstance(value, np.ndarray) or np.isscalar(value):
            wt = WeightTensor(np.asarray(value), name=name)
        else:
            raise InvalidArgumentError(f"weights[{name!r}]", type(value).__name__, "expected a WeightTensor or ndarray")
        out[name] = wt
    return out
