"""Keeping a repository healthy: prune, reachability, gc, fsck, and the size figures (stats, chunk sizes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import CoralError, CorruptObjectError, ObjectNotFoundError, RefNotFoundError
from ..objects.tensors import ObjectStore, chunk_key, pack_bytes
from ..store.base import Store
from .commit import commit_key
from .history import History, is_commit_id
from .names import validate_ref_name
from .refs import SYMBOLIC, Refs, parse_tag


class Maintenance:
    """gc, fsck and size reports over one repository's store, object store, history and refs."""

    def __init__(self, store: Store, objects: ObjectStore, history: History, refs: Refs) -> None:
        self.store = store
        self.objects = objects
        self.history = history
        self.refs = refs

    def prune(self, commit_id: str) -> str:
        self.store.compare_and_swap(f"pruned/{commit_id}", None, "1")
        return commit_id

    def reachable(self, strict: bool = False) -> set[str]:
        """Commits reachable from any ref. ``strict`` (gc) refuses a missing or unreadable commit: deleting
        "unreachable" objects behind a hole in history would destroy every older checkpoint."""
        seen: set[str] = set()
        frontier = list(self.refs.targets(strict))
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            try:
                frontier.extend(self.history.read_commit(c).parents)
            except RefNotFoundError:
                if strict:
                    raise CorruptObjectError(c, "commit is reachable from a ref but missing; gc deleted nothing "
                                                "(run fsck)") from None
                continue
        return seen

    def live_chunks(self, commits: Iterable[str]) -> set[str]:
        """Chunks the unpruned ``commits`` need, with the delta bases those chunks decode from."""
        live: set[str] = set()
        for cid in commits:
            if self.history.is_pruned(cid):
                continue
            for entry in self.history.read_commit(cid).tree.values():
                live.update(entry.chunks)
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

    def gc(self, staged: set[str]) -> dict[str, int]:
        """Delete unreachable commits, chunks no live commit needs (keeping delta bases and ``staged``
        chunks), and temp files of crashed writers."""
        self.history.clear_cache()
        removed = freed = 0
        with self.store.lock("gc", exclusive=True):
            reachable = self.reachable(strict=True)
            live = self.live_chunks(reachable)
            live.update(staged)  # staged here, not yet committed
            live.update(self.store.staged_elsewhere())  # staged by live writers in other processes
            for key in list(self.store.list("chunks/")):
                parts = key.split("/")
                cid = parts[1] + parts[2] if len(parts) == 3 else ""
                if cid not in live:
                    freed += self.store.size(key)
                    self.store.delete(key)
                    removed += 1
            for cid in self.history.commit_ids():
                if cid not in reachable:
                    freed += self.store.size(commit_key(cid))
                    self.store.delete(commit_key(cid))
                    removed += 1
            for name in self.store.list_refs("pruned/"):
                if name[len("pruned/") :] not in reachable:
                    self.store.compare_and_swap(name, self.store.get_ref(name), None)
            # crash leftovers only: live writers hold theirs locked; backends without temp files report (0, 0)
            temp, temp_bytes = self.store.remove_temp_files()
            freed += temp_bytes
        self.objects.clear_cache()
        return {"objects_removed": removed, "bytes_freed": freed, "temp_files_removed": temp}

    def fsck(self) -> dict[str, Any]:
        """Verify every reachable commit and every chunk a live commit needs; report damage by name."""
        self.history.clear_cache()  # fsck re-reads and re-verifies every commit from the store
        errors: list[str] = []
        checked = 0
        reachable: set[str] = set()
        frontier = list(self.refs.targets())
        for name, value in self.store.list_refs("heads/").items():
            if not is_commit_id(value) or not self.store.has(commit_key(value)):
                errors.append(f"branch {name[6:]!r} points at missing commit {value[:80]!r}")
        for name, value in self.store.list_refs("tags/").items():
            try:
                parse_tag(name, value)
            except CorruptObjectError as exc:
                errors.append(f"tag {name[5:]!r}: {exc}")
        head = self.refs.head()
        if head.startswith(SYMBOLIC):
            try:
                validate_ref_name(head[len(SYMBOLIC) :], "HEAD branch")
            except CoralError as exc:
                errors.append(f"HEAD: {exc}")
        bad_chunks: dict[str, str] = {}
        while frontier:
            c = frontier.pop()
            if c in reachable:
                continue
            reachable.add(c)
            try:
                commit = self.history.read_commit(c)
            except (CoralError, ValueError) as exc:
                errors.append(f"commit {c}: {exc}")
                continue
            frontier.extend(commit.parents)
            if self.history.is_pruned(c):
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
        live = self.live_chunks(reachable) if not errors else set()
        unreferenced = []
        if not errors:
            for key in self.store.list("chunks/"):
                parts = key.split("/")
                if len(parts) == 3 and parts[1] + parts[2] not in live:
                    unreferenced.append(parts[1] + parts[2])
            # commit objects no ref reaches (a crash between writing a commit and moving its branch)
            unreferenced += [c for c in self.history.commit_ids() if c not in reachable]
        return {
            "ok": not errors,
            "errors": sorted(set(errors)),
            "commits": len(reachable),
            "chunks_checked": checked,
            "unreferenced_objects": len(unreferenced),
            "temp_files": len(self.store.temp_files()),
        }

    def stats(self) -> dict[str, Any]:
        """Logical bytes (every live commit's tensors), unique bytes after dedup, stored bytes on disk."""
        reachable = self.reachable()
        logical = 0
        unique: dict[str, int] = {}
        commits = 0
        for cid in reachable:
            commits += 1
            if self.history.is_pruned(cid):
                continue
            for entry in self.history.read_commit(cid).tree.values():
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

    def chunk_sizes(self, cid: str) -> dict[str, dict[str, int]]:
        """Per tensor of commit ``cid``: logical bytes and stored bytes (for ``coral du``/``show``)."""
        out = {}
        tree = self.history.read_commit(cid).tree
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
