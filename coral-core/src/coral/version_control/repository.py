"""The Repository: a thin front over refs, history, staging, committing, loading, maintenance and packing.

Writes happen in a fixed order (chunks, then the commit, then the ref by compare-and-swap), so a crash at
any instant leaves every earlier commit intact and at most unreferenced objects, which ``gc`` removes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.weight_tensor import WeightTensor
from ..errors import CoralError, InvalidArgumentError, RefNotFoundError, RepositoryNotFoundError
from ..objects.tensors import ObjectStore, TensorEntry
from ..store.base import Store
from ..store.local import LocalStore
from ..store.registry import open_store
from . import diff as _diff
from . import merge as _merge
from . import packing
from . import remotes as _remotes
from .background import BackgroundWork
from .commit import Commit, CommitInfo
from .committing import commit_tree
from .documents import Documents
from .history import History
from .loading import Loader
from .maintenance import Maintenance
from .names import validate_tensor_name
from .packer import BackgroundPacker, drain
from .refs import DEFAULT_BRANCH, Refs
from .staging import StagingArea, normalize_weights

log = logging.getLogger(__name__)

CORAL_DIR = ".coral"

# older imports of the training layer and plugins

__all__ = ["CORAL_DIR", "DEFAULT_BRANCH", "Repository"]


class Repository:
    """A repository of weights. ``Repository(path, init=True)`` creates it; ``Repository(path)`` opens it.

    ``path`` is a folder (the data lives in ``path/.coral``) or a store URL such as ``memory://name``.
    """

    def __init__(self, path: str | os.PathLike[str], init: bool = False, *, store: Store | None = None) -> None:
        self.path, self.store = self._open(path, init, store)
        self.objects = ObjectStore(self.store)
        self.history = History(self.store)
        self.refs = Refs(self.store, self.history)
        self.staging = StagingArea(self.store, self.objects)
        self.loader = Loader(self.objects, self.history)
        self.maintenance = Maintenance(self.store, self.objects, self.history, self.refs)
        self.documents = Documents(self.store)
        # work that runs after the call that caused it (packing now; pushes can add their own job)
        self.background = BackgroundWork()
        self.packer = BackgroundPacker(self.store, self.objects, self.history)
        self.background.add(self.packer)
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
    def find(cls, start: str | os.PathLike[str] = ".") -> Repository:
        """Open the repository at ``start`` or the nearest parent folder holding one (like git)."""
        here = Path(start).resolve()
        for cand in (here, *here.parents):
            if (cand / CORAL_DIR).is_dir():
                return cls(cand)
        raise RepositoryNotFoundError(f"no Coral repository at {here} or any parent folder")

    def close(self) -> None:
        """Release this handle: background work finishes the item in hand and stops (what is left stays
        queued in the store and resumes on the next write or ``coral repack``)."""
        self.background.close()
        self.store.release_staged(self.staging.token)
        self.objects.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Repository({str(self.path) if self.path else self.store.describe()!r})"

    # ---- refs --------------------------------------------------------------------------------------------
    @property
    def current_branch(self) -> str | None:
        return self.refs.current_branch

    def head_commit(self) -> str | None:
        """Hash of the commit HEAD points at, or None in an empty repository."""
        return self.refs.head_commit()

    def list_branches(self) -> list[str]:
        return self.refs.list_branches()

    def create_branch(self, name: str, start: str | None = None) -> str:
        """Create branch ``name`` at ``start`` (default HEAD); returns its commit hash."""
        return self.refs.create_branch(name, start)

    def reset_branch(self, name: str, commit: str) -> str:
        """Point branch ``name`` at ``commit`` (any ref, e.g. ``main@{1}``), creating it if missing; repairs a
        damaged branch. Logged in the reflog like every update; returns the commit hash."""
        return self.refs.reset_branch(name, commit)

    def reflog(self, ref: str = "HEAD") -> list[dict[str, Any]]:
        """The updates of ``ref`` (branch, tag or ``HEAD``), newest first: ``{"ref", "old", "new", "time",
        "reason", "commit"}``. ``REF@{N}`` resolves to entry N's commit, as in git."""
        return [e.as_dict() for e in self.refs.log_of(ref)]

    def delete_branch(self, name: str, force: bool = False) -> None:
        """Delete branch ``name`` (git's ``-d``): refused with UnmergedBranchError when no other branch or tag
        reaches its head; ``force=True`` (git's ``-D``) deletes it anyway."""
        self.refs.delete_branch(name, force)

    def switch(self, ref: str, create: bool = False) -> str:
        """Check out a branch (HEAD follows it), or detach HEAD at a tag/hash/``HEAD~N``."""
        if create:
            self.create_branch(ref)
        target = self.refs.switch(ref)
        self.staging.entries.clear()
        self.store.release_staged(self.staging.token)
        return target

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
        return self.refs.tag(name, description, commit_ref, model_card, metadata)

    def delete_tag(self, name: str) -> None:
        self.refs.delete_tag(name)

    def move_tag(self, name: str, commit_ref: str, description: str | None = None) -> None:
        """Point an existing tag (e.g. ``best-...``) at another commit, creating it if missing."""
        self.refs.move_tag(name, commit_ref, description)

    def list_tags(self) -> list[dict[str, Any]]:
        """Every tag as ``{"name", "commit", "description", "model_card", "time", "metadata"}``."""
        return self.refs.list_tags()

    def resolve(self, ref: str | None = None) -> str:
        """Resolve a branch, tag, full or short hash, ``HEAD``, ``HEAD~N`` or ``name~N`` to a commit hash."""
        return self.refs.resolve(ref)

    # ---- commits -----------------------------------------------------------------------------------------
    def _read_commit(self, commit_id: str) -> Commit:
        return self.history.read_commit(commit_id)

    def _commit_ids(self, prefix: str = "") -> list[str]:
        return self.history.commit_ids(prefix)

    def get_commit(self, ref: str | None = None) -> Commit:
        return self.history.read_commit(self.resolve(ref))

    def is_pruned(self, commit_id: str) -> bool:
        return self.history.is_pruned(commit_id)

    def stage_weights(self, weights: Mapping[str, Any] | Iterable[WeightTensor]) -> dict[str, str]:
        """Write the weights' chunks now (deduplicated) and stage them for the next commit.

        Accepts ``{name: WeightTensor | ndarray}`` or an iterable of named WeightTensors. Returns
        ``{name: "stored"}`` for every staged tensor. The next ``commit`` snapshots exactly the staged tensors.
        """
        return self.staging.stage(weights)

    @property
    def staged(self) -> dict[str, TensorEntry]:
        return dict(self.staging.entries)

    @property
    def _staged(self) -> dict[str, TensorEntry]:
        return self.staging.entries

    def commit(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        allow_empty: bool = False,
        parents: list[str] | None = None,
        pack: bool = True,
    ) -> str:
        """Commit the staged tensors on the current branch; returns the commit hash.

        ``pack``: re-encode the parent's chunks smaller in the background afterwards (see ``wait``)."""
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        if not self.staging.entries and not allow_empty:
            raise CoralError("nothing staged: call stage_weights(weights) before commit()")
        tree = dict(self.staging.entries)
        reason = "commit (merge)" if parents else "commit"
        had_parent = pack and self.refs.read(self.refs.head_ref())[1] is not None
        commit_id = commit_tree(
            self.store, self.refs, self.history, tree, message, dict(metadata or {}), parents, reason=reason
        )
        self.staging.clear()
        if had_parent:  # a root commit has nothing to pack against it
            self.packer.enqueue(commit_id)
        return commit_id

    def commit_weights(
        self,
        weights: Mapping[str, Any] | Iterable[WeightTensor],
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        allow_empty: bool = False,
        pack: bool = True,
    ) -> str:
        """Write ``weights`` and commit exactly them in one step, without touching the shared staging area.

        Holds the writers' lock from the first chunk to the ref update, so a concurrent ``gc`` can never
        free a chunk of a commit being made. Faster than ``stage_weights`` + ``commit``: the commit object is
        written while the chunks are still being fsynced. Used by the training layer (also from background
        threads). ``pack``: re-encode the parent's chunks smaller in the background afterwards.
        """
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        items = normalize_weights(weights)
        if not items and not allow_empty:
            raise InvalidArgumentError("weights", weights, "holds no tensors: nothing to commit (allow_empty=True)")
        # a damaged ref: refuse before any chunk is written
        had_parent = self.refs.read(self.refs.head_ref())[1] is not None
        with self.store.lock("gc", exclusive=False):
            entries, _written, pending = self.objects.write_tensors_deferred(
                [(name, wt.data) for name, wt in items.items()]
            )
            for name, entry in entries.items():
                entry.layer_type = items[name].metadata.layer_type
            commit_id = commit_tree(
                self.store, self.refs, self.history, entries, message, dict(metadata or {}), None, [pending],
                check_stored=False,
            )
        if pack and had_parent:  # a root commit has nothing to pack against it
            self.packer.enqueue(commit_id)
        return commit_id

    def commit_tree(
        self, tree: Mapping[str, TensorEntry], message: str, metadata: Mapping[str, Any] | None = None
    ) -> str:
        """Commit tensors whose chunks other writers already stored (e.g. the ranks of a sharded save).

        Every chunk is checked to be in the store before the ref moves: a tree with a missing chunk is refused."""
        if not isinstance(message, str):
            raise InvalidArgumentError("message", message, "must be a string")
        for name in tree:
            validate_tensor_name(name)
        return commit_tree(self.store, self.refs, self.history, dict(tree), message, dict(metadata or {}), None)

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
        return [] if start is None else self.history.log(start, limit)

    # ---- loading -----------------------------------------------------------------------------------------
    def get_weights(self, ref: str | None = None, names: Iterable[str] | None = None) -> dict[str, WeightTensor]:
        """The tensors of a commit as lazy WeightTensors: bytes are read (and verified) on first ``.data``."""
        return self.loader.lazy(self.loader.selected_tree(self.resolve(ref), names))

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
        return self.loader.arrays(self.loader.selected_tree(self.resolve(ref), names), mmap)

    # ---- diff / merge ------------------------------------------------------------------------------------
    def diff(self, a: str, b: str | None = None) -> dict[str, Any]:
        """Compare two commits: changed/added/removed names, and per changed tensor similarity figures."""
        ca, cb = self.resolve(a), self.resolve(b)
        ta, tb = self.history.read_commit(ca).tree, self.history.read_commit(cb).tree
        result = _diff.tree_diff(ta, tb)
        stats = {}
        for name in result["changed"]:
            ea, eb = ta[name], tb[name]
            same_kind = ea.shape == eb.shape and all(_diff.has_similarity(e.dtype, e.shape) for e in (ea, eb))
            if same_kind and not self.is_pruned(ca) and not self.is_pruned(cb):
                stats[name] = _diff.tensor_stats(
                    self.objects.read_tensor(name, ea), self.objects.read_tensor(name, eb)
                )
        result["stats"] = stats
        result["from"], result["to"] = ca, cb
        return result

    def merge_base(self, a: str, b: str) -> str | None:
        """The newest common ancestor of ``a`` and ``b`` (None when they share none)."""
        return self.history.merge_base(self.resolve(a), self.resolve(b))

    def merge(
        self,
        other: str,
        strategy: str = "average",
        weights: list[float] | tuple[float, ...] | None = None,
        message: str | None = None,
        *,
        on_conflict: str | None = None,
        density: float | None = None,
        seed: int | None = None,
        t: float | None = None,
        per_tensor: Mapping[str, str] | None = None,
    ) -> str:
        """Merge ``other`` into the current branch in weight space; returns the two-parent merge commit.

        ``strategy``: one of ``merge.STRATEGIES`` (average, weighted, task_arithmetic, ties, dare, dare_ties,
        slerp, ours, theirs); ``per_tensor`` maps tensor-name globs to a strategy or a side. Every check runs
        before anything is written; see docs/merging.md. Returns HEAD when ``other`` is already merged.
        """
        return _merge.merge_into_head(
            self, other, strategy, weights, message,
            on_conflict=on_conflict, density=density, seed=seed, t=t, per_tensor=per_tensor,
        )

    # ---- retention, gc, fsck, stats, repack --------------------------------------------------------------
    def prune(self, commit: str) -> str:
        """Free a commit's weights but keep the commit (log shows it as pruned). Run ``gc`` to reclaim space."""
        return self.maintenance.prune(self.resolve(commit))

    def gc(self, expire_reflog: str | float | None = None) -> dict[str, int]:
        """Delete unreachable commits, chunks no live commit needs (keeping delta bases), and temp files.

        Commits the reflog reached within ``expire_reflog`` (default: the config's ``reflog_expire``, else
        30 days; ``"now"`` keeps none) stay, so a mistaken reset or delete can be undone; older reflog entries
        are deleted, oldest first. A damaged ref stops gc before it deletes anything."""
        return self.maintenance.gc(self.staging.chunks(), expire_reflog)

    def fsck(self) -> dict[str, Any]:
        """Verify every reachable commit and every chunk a live commit needs; report damage by name."""
        return self.maintenance.fsck()

    def stats(self) -> dict[str, Any]:
        """Logical bytes (every live commit's tensors), unique bytes after dedup, stored bytes on disk."""
        return self.maintenance.stats()

    def chunk_sizes(self, commit: str | None = None) -> dict[str, dict[str, int]]:
        """Per tensor of a commit: logical bytes and stored bytes (for ``coral du``/``show``)."""
        return self.maintenance.chunk_sizes(self.resolve(commit))

    def repack(self, branch: str | None = None, max_commits: int | None = None) -> dict[str, int]:
        """Re-encode older chunks as deltas against the same place in the next newer commit (reverse deltas).

        The newest commit of every branch stays delta-free, so the checkpoint loaded most often needs no
        chain walk; ids do not change, so history is untouched. A raw chunk that cannot become a delta
        (chain bound reached, no counterpart) is compressed as a keyframe instead. With ``max_commits`` only
        the newest commits along first parents are visited, so the cost does not grow with history.
        Chunks are re-encoded in parallel. Returns ``{"chunks": n, "bytes_saved": b}``.
        """
        start = self.resolve(branch) if branch is not None else self.head_commit()
        return packing.repack(self.store, self.objects, self.history, start, max_commits)

    # ---- background work ---------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until this repository's background work (packing after commits) is done; False when
        ``timeout`` seconds ran out first. Work left at exit resumes on the next write."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidArgumentError("timeout", timeout, "must be a non-negative number of seconds or None")
        return self.background.wait(timeout)

    def queue_packing(self, commit_id: str) -> None:
        """Queue packing of ``commit_id``'s parent against it (what ``commit(pack=True)`` does), for writers
        that finish their own bookkeeping (tags, history) before the queue entry takes disk space."""
        if self.get_commit(commit_id).parents:  # a root commit has nothing to pack against it
            self.packer.enqueue(commit_id)

    def pending_background(self) -> dict[str, int]:
        """Items of background work waiting, by kind (``{"packing": commits}``), queued by any process."""
        return self.background.pending()

    def pack_pending(self) -> dict[str, int]:
        """Pack every commit the queue holds now, in this thread (``coral repack``): what a killed or exited
        process left. Returns ``{"chunks", "bytes_saved", "commits"}``."""
        self.packer.wait()
        return drain(self.store, self.objects, self.history, serial=False)

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

    def push(
        self, remote: str = "origin", branch: str | None = None, force: bool = False, **kwargs: Any
    ) -> _remotes.SyncResult:
        """Send a branch (default: the current one); refused if the remote branch moved, unless ``force``."""
        return _remotes.push(self, remote, branch, force, **kwargs)

    def pull(self, remote: str = "origin", branch: str | None = None, **kwargs: Any) -> _remotes.SyncResult:
        """Fetch, then fast-forward the branch; a diverged branch is refused."""
        return _remotes.pull(self, remote, branch, **kwargs)

    @classmethod
    def clone(
        cls, url: str | os.PathLike[str], path: str | os.PathLike[str], branch: str | None = None,
        depth: int | None = None, **kwargs: Any,
    ) -> Repository:
        """A new repository at ``path`` from ``url`` (remote ``origin``); ``depth=1``: newest weights only."""
        return _remotes.clone(url, path, branch, depth, **kwargs)

    # ---- small mutable documents (history, index) --------------------------------------------------------
    def read_document(self, name: str) -> Any:
        return self.documents.read(name)

    def update_document(self, name: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace document ``name`` with ``fn(old)`` (compare-and-swap retry loop)."""
        return self.documents.update(name, fn)


