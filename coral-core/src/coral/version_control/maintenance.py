"""Keeping a repository healthy: prune, reachability, gc, fsck, and the size figures (stats, chunk sizes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import CoralError, CorruptObjectError, ObjectNotFoundError, RefNotFoundError
from ..objects.tensors import ObjectStore, chunk_key, pack_bytes
from ..store.base import Store
from .commit import commit_key
from .diff import natural_key
from .history import History, is_commit_id
from .reflog import DEFAULT_EXPIRE_DAYS, parse_expire
from .refs import Refs, parse_tag


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

    def _walk(self, starts: Iterable[str], seen: set[str]) -> set[str]:
        """Add to ``seen`` every commit reachable from ``starts`` that can be read (reflog reach: best effort)."""
        frontier = [c for c in starts if c not in seen]
        while frontier:
            c = frontier.pop()
            if c in seen or not self.history.exists(c):
                continue
            try:
                parents = self.history.read_commit(c).parents
            except CoralError:
                continue
            seen.add(c)
            frontier.extend(parents)
        return seen

    def expire_cutoff(self, expire: str | float | None) -> float | None:
        """The time before which reflog entries expire: ``expire`` or the config's ``reflog_expire`` (30d)."""
        if expire is None:
            try:
                expire = json.loads(self.store.get_ref("config") or "{}").get("reflog_expire")
            except (ValueError, AttributeError):
                expire = None
        seconds = parse_expire(expire if expire is not None else f"{DEFAULT_EXPIRE_DAYS:g}d")
        return None if seconds is None else time.time() - seconds

    def reflog_roots(self, cutoff: float | None) -> set[str]:
        """Commits named by reflog entries newer than ``cutoff`` (old and new values: a reset is undoable)."""
        roots: set[str] = set()
        for ref in self.refs.reflog.refs():
            for e in self.refs.reflog.entries(ref, self.refs.value_for_log(ref)):
                if cutoff is None or e.time >= cutoff:
                    roots.update(v for v in (e.old, e.new, e.commit) if v is not None and is_commit_id(v))
        return roots

    def expire_reflog(self, cutoff: float) -> int:
        """Delete reflog entries older than ``cutoff``, oldest first, keeping each existing ref's newest entry."""
        keep = set()
        for ref in self.refs.reflog.refs():
            if self.store.get_ref(ref) is not None:
                chain = self.refs.reflog.entries(ref, self.refs.value_for_log(ref))
                if chain:
                    keep.add(chain[0].key)
        return self.refs.reflog.expire(cutoff, keep)

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

    def gc(self, staged: set[str], expire_reflog: str | float | None = None) -> dict[str, int]:
        """Delete unreachable commits (the reflog reaches some within its expiry time), chunks no live commit
        needs (keeping delta bases and ``staged`` chunks), expired reflog entries and crashed writers' temp files."""
        self.history.clear_cache()
        removed = freed = expired = 0
        cutoff = self.expire_cutoff(expire_reflog)
        with self.store.lock("gc", exclusive=True):
            reachable = self.reachable(strict=True)  # a damaged ref raises here, before anything is deleted
            if cutoff is not None:
                expired = self.expire_reflog(cutoff)
            self._walk(self.reflog_roots(cutoff), reachable)
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
        return {
            "objects_removed": removed, "bytes_freed": freed, "temp_files_removed": temp,
            "reflog_entries_expired": expired,
        }

    def fsck(self) -> dict[str, Any]:
        """Verify every reachable commit and every chunk a live commit needs; report damage by name."""
        self.history.clear_cache()  # fsck re-reads and re-verifies every commit from the store
        errors: list[str] = []
        checked = 0
        reachable: set[str] = set()
        frontier = list(self.refs.targets())
        damaged = self.damaged_refs()
        errors += [d["message"] for d in damaged]
        errors += self.refs.reflog.check()
        frontier = [c for c in frontier if is_commit_id(c)]  # damaged values are named above, not walked
        bad_chunks: dict[str, str] = {}
        root_of: dict[str, str] = {}  # unreadable chunk -> the damaged object it depends on (itself, or a delta base)
        affected: dict[str, tuple[dict[str, None], dict[str, None]]] = {}  # damaged object -> (commits, tensors)
        dependents: dict[str, dict[str, None]] = {}  # damaged object -> intact deltas that need it
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
                            root_of[chunk] = exc.object_id if is_commit_id(exc.object_id) else chunk
                        except ObjectNotFoundError:
                            root_of[chunk] = self._missing_link(chunk)
                            bad_chunks[chunk] = f"chunk {root_of[chunk]} is missing"
                    if bad_chunks[chunk]:
                        root = root_of[chunk]
                        if root != chunk:  # readable bytes, but a delta on a damaged base: report the base
                            dependents.setdefault(root, {})[chunk] = None
                            bad_chunks.setdefault(root, bad_chunks[chunk])
                            root_of.setdefault(root, root)
                        hit = affected.setdefault(root, ({}, {}))
                        hit[0][c] = None
                        hit[1][tname] = None
                    elif entry.offset is not None:  # a packed tensor must lie inside its pack
                        end = entry.offset + entry.nbytes
                        if end > self.objects.header(chunk).length:
                            errors.append(f"commit {c[:12]} tensor {tname!r}: bytes up to {end} lie outside its pack")
        damaged_objects = [
            {"object": chunk, "problem": bad_chunks[chunk], "commits": list(cs), "tensors": sorted(ts, key=natural_key),
             "dependents": list(dependents.get(chunk, {}))}
            for chunk, (cs, ts) in affected.items()
        ]
        errors += [_object_damage_line(d) for d in damaged_objects]  # one line per damaged object
        ref_commits = len(reachable)
        if not errors:  # what the reflog still reaches is kept by gc, so it is not "unreferenced"
            reachable = self._walk(self.reflog_roots(self.expire_cutoff(None)), reachable)
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
            "damaged_refs": damaged,
            "damaged_objects": damaged_objects,
            "commits": ref_commits,
            "chunks_checked": checked,
            "unreferenced_objects": len(unreferenced),
            "temp_files": len(self.store.temp_files()),
        }

    def _missing_link(self, chunk: str) -> str:
        """The object whose absence makes ``chunk`` unreadable: the chunk itself, or its first missing delta base."""
        last = chunk
        try:
            for base in self.objects.chain(chunk):
                last = base
        except ObjectNotFoundError:
            return last
        except CorruptObjectError:
            return chunk
        return chunk

    def damaged_refs(self) -> list[dict[str, Any]]:
        """Each damaged branch, tag, remote-tracking branch or HEAD with its content, its last good value from
        the reflog and the command that restores it."""
        out = []
        names = [*self.store.list_refs("heads/"), *self.store.list_refs("tags/"), *self.store.list_refs("remotes/")]
        names.append("HEAD")
        for ref in names:
            raw = self.store.get_ref(ref)
            if raw is None:
                continue
            try:
                if ref.startswith("tags/"):
                    parse_tag(ref, raw)
                    continue
                self.refs.read(ref)
                continue
            except CorruptObjectError:
                pass
            if ref.startswith("remotes/"):  # not in the reflog: the remote itself holds the good value
                tracking, fix = ref[len("remotes/") :], f"coral fetch {ref.split('/')[1]}"
                out.append({
                    "ref": ref, "content": raw[:200], "last_good": None, "restore": fix,
                    "message": f"remote-tracking branch {tracking!r} is damaged (holds {raw[:80]!r}); "
                               f"restore with: {fix}",
                })
                continue
            good = None
            for e in self.refs.reflog.entries(ref, self.refs.value_for_log(ref)):
                value = e.commit if ref == "HEAD" else e.new
                if value is not None and self.history.exists(value):
                    good = (value, e)
                    break
            name = ref.split("/", 1)[1] if "/" in ref else ref
            if good is None:
                fix = f"coral log --all, then coral branch --force {name} COMMIT" if ref != "HEAD" else (
                    "coral checkout BRANCH")
                last = "no good value in its reflog"
            else:
                value, e = good
                when = datetime.fromtimestamp(e.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                last = f"last good value {value} ({when}, {e.reason})"
                if ref.startswith("heads/"):
                    fix = f"coral branch --force {name} {value}"
                elif ref.startswith("tags/"):
                    fix = f"coral tag -d {name} && coral tag {name} --commit {value}"
                else:
                    fix = f"coral checkout {e.new if e.new and not e.new.startswith('ref: ') else value}"
                    fix = fix.replace("ref: heads/", "")
            kind = "branch" if ref.startswith("heads/") else "tag" if ref.startswith("tags/") else "HEAD"
            label = f"{kind} {name!r}" if kind != "HEAD" else "HEAD"
            out.append({
                "ref": ref, "content": raw[:200], "last_good": good[0] if good else None, "restore": fix,
                "message": f"{label} is damaged (holds {raw[:80]!r}); {last}; restore with: {fix}",
            })
        return out

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


def _object_damage_line(d: Mapping[str, Any]) -> str:
    """``object <id>: <problem>; affects N commit(s) (a, b, ...) and tensor(s) 'x', 'y'`` (long lists cut)."""
    commits, tensors = d["commits"], d["tensors"]
    cs = ", ".join(c[:12] for c in commits[:5]) + (f", ... ({len(commits) - 5} more)" if len(commits) > 5 else "")
    ts = ", ".join(repr(t) for t in tensors[:5]) + (f", ... ({len(tensors) - 5} more)" if len(tensors) > 5 else "")
    deps = d.get("dependents") or []
    ds = ", ".join(c[:16] for c in deps[:5]) + (f", ... ({len(deps) - 5} more)" if len(deps) > 5 else "")
    through = f", through {len(deps)} intact delta(s) that need it ({ds})" if deps else ""
    return (
        f"object {d['object'][:16]}: {d['problem']}; affects {len(commits)} commit(s) ({cs}) "
        f"and {len(tensors)} tensor(s) ({ts}){through}"
    )
