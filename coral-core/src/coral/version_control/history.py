"""Reading history: a cache of verified commits, log, ancestry and merge bases (commit ids in, never ref names)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TypeGuard

from ..errors import CoralError, CorruptObjectError, ObjectNotFoundError, RefNotFoundError
from ..store.base import Store
from .commit import Commit, CommitInfo, commit_key

COMMIT_ID = re.compile(r"^[0-9a-f]{64}$")
_CACHE_SIZE = 4096


def is_commit_id(value: object) -> TypeGuard[str]:
    """True for a full 64-hex commit id (what a branch or a parent must hold)."""
    return isinstance(value, str) and COMMIT_ID.fullmatch(value) is not None


class History:
    """Commits of one store: immutable, hash-checked once and cached, walked for log, ancestry and merge base."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, Commit] = {}
        self._last_commit: tuple[str, float] = ("", 0.0)  # (id, timestamp) of this handle's newest commit

    def clear_cache(self) -> None:
        """Forget cached commits (gc and fsck re-read everything from the store)."""
        self._cache.clear()

    def read_commit(self, commit_id: str) -> Commit:
        """The commit ``commit_id``; a malformed id is damage (CorruptObjectError), a missing one RefNotFoundError."""
        if not is_commit_id(commit_id):
            raise CorruptObjectError(repr(commit_id)[:80], "is not a commit id (a damaged or hostile ref or parent)")
        cached = self._cache.get(commit_id)
        if cached is not None:
            return cached
        try:
            raw = self.store.get(commit_key(commit_id))
        except ObjectNotFoundError:
            raise RefNotFoundError(f"commit {commit_id} not found") from None
        commit = Commit.from_bytes(commit_id, raw)
        # commits are immutable and were hash-checked just now: walks of history (gc, log, retention) reuse them
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[commit_id] = commit
        return commit

    def exists(self, commit_id: str) -> bool:
        """True when ``commit_id`` is a well-formed id whose commit object is in the store."""
        return is_commit_id(commit_id) and (commit_id in self._cache or self.store.has(commit_key(commit_id)))

    def commit_ids(self, prefix: str = "") -> list[str]:
        """Every commit id in the store (those starting with ``prefix`` when it has two or more characters)."""
        out = []
        for key in self.store.list(f"commits/{prefix[:2]}" if len(prefix) >= 2 else "commits/"):
            parts = key.split("/")
            if len(parts) == 3:
                out.append(parts[1] + parts[2])
        return out

    def is_pruned(self, commit_id: str) -> bool:
        return self.store.get_ref(f"pruned/{commit_id}") is not None

    def note_commit(self, commit_id: str, timestamp: float) -> None:
        """Remember this handle's newest commit: the next commit's parent time needs no read."""
        self._last_commit = (commit_id, timestamp)

    def parent_time(self, commit_id: str) -> float:
        if self._last_commit[0] == commit_id:
            return self._last_commit[1]
        try:
            return self.read_commit(commit_id).timestamp
        except CoralError:  # a damaged parent must not stop new checkpoints (fsck reports it)
            return 0.0

    def log(self, start: str, limit: int | None = None) -> list[CommitInfo]:
        """Commits reachable from ``start``, newest first."""
        seen: set[str] = set()
        frontier = [start]
        infos: list[CommitInfo] = []
        while frontier:
            cid = frontier.pop()
            if cid in seen:
                continue
            seen.add(cid)
            c = self.read_commit(cid)
            infos.append(
                CommitInfo(
                    cid, c.parents, c.timestamp, c.message, c.metadata, self.is_pruned(cid),
                    len(c.tree), sum(e.nbytes for e in c.tree.values()),
                )
            )
            frontier.extend(c.parents)
        infos.sort(key=lambda i: i.timestamp, reverse=True)
        return infos[:limit] if limit is not None else infos

    def is_ancestor(self, ancestor: str, of: str) -> bool:
        seen: set[str] = set()
        frontier = [of]
        while frontier:
            c = frontier.pop()
            if c == ancestor:
                return True
            if c in seen:
                continue
            seen.add(c)
            frontier.extend(self.read_commit(c).parents)
        return False

    def merge_base(self, a: str, b: str) -> str | None:
        """The newest common ancestor of commits ``a`` and ``b`` (None when they share none)."""
        ancestors: set[str] = set()
        frontier = [a]
        while frontier:
            c = frontier.pop()
            if c not in ancestors:
                ancestors.add(c)
                frontier.extend(self.read_commit(c).parents)
        frontier, seen = [b], set()
        best: tuple[float, str] | None = None
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            if c in ancestors:
                t = self.read_commit(c).timestamp
                if best is None or t > best[0]:
                    best = (t, c)
                continue
            frontier.extend(self.read_commit(c).parents)
        return best[1] if best else None

    def first_parent_ids(self, start: str | None) -> Iterator[str]:
        """Unpruned commits from ``start`` back along first parents, read lazily."""
        cur = start
        seen: set[str] = set()
        while cur is not None and cur not in seen:
            seen.add(cur)
            if not self.is_pruned(cur):
                yield cur
            parents = self.read_commit(cur).parents
            cur = parents[0] if parents else None
