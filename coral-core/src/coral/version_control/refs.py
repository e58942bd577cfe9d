"""Refs: branches, tags and HEAD, resolving names to commit ids, and every ref update (one CAS per move).

Like dulwich's ``RefsContainer``: this module is the only one that reads or moves ``heads/``, ``tags/`` and
``HEAD``; history walks are asked of :class:`~coral.version_control.history.History`. Remote-tracking
branches (``remotes/<remote>/<branch>``, written by fetch and push in remotes.py) are read here too: they
resolve as ``origin/main`` and keep the commits they name alive.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from ..errors import (
    AmbiguousRefError,
    CorruptObjectError,
    CorruptRefError,
    InvalidArgumentError,
    InvalidNameError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    UnmergedBranchError,
)
from ..store.base import Store
from .commit import commit_key
from .documents import CAS_TRIES, parse_document
from .history import History, is_commit_id
from .jsonsafe import canonical_dumps
from .names import validate_ref_name
from .reflog import Reflog, ReflogEntry

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
SYMBOLIC = "ref: heads/"
TRACKING_PREFIX = "remotes/"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
_AT = re.compile(r"^(.*)@\{(\d+)\}$")


def parse_tag(key: str, raw: str) -> dict[str, Any]:
    """A tag document; anything but an object naming a 64-hex commit is a CorruptObjectError naming the tag."""
    doc = parse_document(key, raw)
    if not isinstance(doc, dict) or not is_commit_id(doc.get("commit")):
        raise CorruptObjectError(f"ref {key}", "tag document does not name a commit")
    return doc


def is_ref_name(name: Any) -> bool:
    try:
        validate_ref_name(name)
    except InvalidNameError:
        return False
    return True


class Refs:
    """Branches, tags and HEAD of one store. Every value read is validated (a damaged ref raises
    CorruptRefError); every update writes its reflog entry first, then moves the ref by compare-and-swap."""

    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.history = history
        self.reflog = Reflog(store)

    # ---- reading and validating --------------------------------------------------------------------------
    def read(self, ref: str) -> tuple[str | None, str | None]:
        """(raw text, validated value) of ``heads/...``, ``remotes/...`` or ``HEAD``; (None, None) when absent.

        Blanks around the text (a hand edit's newline) are ignored; anything but a commit id of an existing
        commit (or, for HEAD, ``ref: heads/NAME``) raises CorruptRefError naming the ref and its content."""
        raw = self.store.get_ref(ref)
        if raw is None:
            return None, None
        value = raw.strip()
        if ref == "HEAD" and value.startswith(SYMBOLIC):
            if not is_ref_name(value[len(SYMBOLIC) :]):
                raise CorruptRefError(ref, raw, "not a branch name")
            return raw, value
        if not is_commit_id(value):
            raise CorruptRefError(ref, raw, "not a commit id")
        if not self.history.exists(value):
            raise CorruptRefError(ref, raw, "no such commit in the store")
        return raw, value

    def head(self) -> str:
        """HEAD's value: ``ref: heads/NAME`` when on a branch, a commit id when detached ("" when absent)."""
        return self.read("HEAD")[1] or ""

    @property
    def current_branch(self) -> str | None:
        head = self.head()
        return head[len(SYMBOLIC) :] if head.startswith(SYMBOLIC) else None

    def head_ref(self) -> str:
        """The ref a commit moves: ``heads/<current branch>``, or ``HEAD`` when detached."""
        branch = self.current_branch
        return f"heads/{branch}" if branch else "HEAD"

    def branch_head(self, branch: str) -> str | None:
        return self.read(f"heads/{branch}")[1]

    def head_commit(self) -> str | None:
        head = self.head()
        if head.startswith(SYMBOLIC):
            return self.branch_head(head[len(SYMBOLIC) :])
        return head or None

    def list_branches(self) -> list[str]:
        return [name[len("heads/") :] for name in self.store.list_refs("heads/")]

    def branch_targets(self) -> dict[str, str]:
        """``{branch: value}`` of every branch, as stored (blanks stripped; not validated: fsck reports damage)."""
        return {name[len("heads/") :]: value.strip() for name, value in self.store.list_refs("heads/").items()}

    def tracking(self, remote: str | None = None) -> dict[str, str]:
        """``{"origin/main": value}`` of every remote-tracking branch (of one remote when given), as stored
        (blanks stripped; not validated: fsck reports damage)."""
        prefix = TRACKING_PREFIX + (f"{remote}/" if remote else "")
        return {ref[len(TRACKING_PREFIX) :]: value.strip() for ref, value in self.store.list_refs(prefix).items()}

    def value_for_log(self, ref: str) -> str | None:
        """A ref's current value as its reflog records values (a tag's commit; raw text when damaged)."""
        raw = self.store.get_ref(ref)
        if raw is None or not ref.startswith("tags/"):
            return None if raw is None else raw.strip()
        try:
            return str(parse_tag(ref, raw)["commit"])
        except CorruptObjectError:
            return raw.strip()

    # ---- updating ----------------------------------------------------------------------------------------
    def update(
        self, ref: str, expected: str | None, new: str | None, log_old: str | None, log_new: str | None,
        reason: str, commit: str | None = None,
    ) -> bool:
        """Write the reflog entry, then compare-and-swap ``ref`` from ``expected`` (raw) to ``new``; a lost
        swap drops the entry. A crash between the two leaves an orphan entry that readers skip."""
        return self.swap(ref, expected, new, self.reflog.write(ref, log_old, log_new, reason, commit))

    def swap(self, ref: str, expected: str | None, new: str | None, entry: str) -> bool:
        """Compare-and-swap ``ref`` after its reflog ``entry`` was written; a lost swap drops the entry."""
        try:
            ok = self.store.compare_and_swap(ref, expected, new)
        except BaseException:
            self.reflog.discard(entry)
            raise
        if not ok:
            self.reflog.discard(entry)
        return ok

    def create_branch(self, name: str, start: str | None = None) -> str:
        validate_ref_name(name, "branch")
        target = self.resolve(start) if start is not None else self.head_commit()
        if target is None:
            raise RefNotFoundError("cannot create a branch in an empty repository: commit first")
        if not self.update(f"heads/{name}", None, target, None, target, f"branch: created from {start or 'HEAD'}"):
            raise RefExistsError(f"branch {name!r} already exists")
        return target

    def reset_branch(self, name: str, commit_ref: str, reason: str | None = None) -> str:
        """Point branch ``name`` at ``commit_ref``, creating it if missing, whatever it held (damage included)."""
        validate_ref_name(name, "branch")
        target = self.resolve(commit_ref)
        for _ in range(CAS_TRIES):
            raw = self.store.get_ref(f"heads/{name}")
            old = None if raw is None else raw.strip()
            why = reason or f"reset: moving to {commit_ref}"
            if self.update(f"heads/{name}", raw, target, old, target, why):
                return target
            time.sleep(0.001)
        raise RefConflictError(f"branch {name!r} kept moving")

    def delete_branch(self, name: str, force: bool = False) -> str:
        """Delete a branch; without ``force`` only when another branch, a tag or a remote-tracking branch still
        reaches its head."""
        validate_ref_name(name, "branch")
        if name == self.current_branch:
            raise InvalidArgumentError("branch", name, "is checked out; switch to another branch first")
        raw = self.store.get_ref(f"heads/{name}")
        if raw is None:
            raise RefNotFoundError(f"branch {name!r} not found")
        if force:
            cur = raw.strip()
        else:
            cur = str(self.read(f"heads/{name}")[1])
            if not self._reached_elsewhere(name, cur):
                raise UnmergedBranchError(
                    f"branch {name!r} is not merged: its head {cur[:12]} is not reachable from any other branch, "
                    f"tag or remote-tracking branch; delete it anyway with force=True (coral branch -D {name})"
                )
        if not self.update(f"heads/{name}", raw, None, cur, None, "branch: deleted"):
            raise RefConflictError(f"branch {name!r} moved while deleting it")
        return cur

    def _reached_elsewhere(self, name: str, commit: str) -> bool:
        """True when ``commit`` is an ancestor of (or equal to) a branch other than ``name``, a tag, a
        remote-tracking branch or HEAD."""
        starts = [v for b, v in self.branch_targets().items() if b != name]
        starts += [t["commit"] for t in self.list_tags()]
        starts += list(self.tracking().values())  # pushed: the remote still has it
        head = self.head()
        if head and not head.startswith("ref: "):
            starts.append(head)
        seen: set[str] = set()
        frontier = [s for s in starts if is_commit_id(s)]
        while frontier:
            c = frontier.pop()
            if c == commit:
                return True
            if c in seen:
                continue
            seen.add(c)
            try:
                frontier.extend(self.history.read_commit(c).parents)
            except RefNotFoundError:
                continue
        return False

    def switch(self, ref: str) -> str:
        """Point HEAD at branch ``ref`` or detach it at a tag/hash/``HEAD~N``; returns the commit ("" if none).

        The target is validated; a damaged HEAD or current branch does not stop a switch away (a repair)."""
        old = self.store.get_ref("HEAD")
        target: str | None
        if is_ref_name(ref) and self.store.get_ref(f"heads/{ref}") is not None:  # HEAD~2, hashes: no branch names
            new = f"{SYMBOLIC}{ref}"
            target = self.branch_head(ref)
        elif isinstance(ref, str) and ref in self.list_branches() + [DEFAULT_BRANCH] and self._empty_head():
            new, target = f"{SYMBOLIC}{ref}", None
        else:
            target = self.resolve(ref)
            new = target
        old_text = None if old is None else old.strip()
        if not self.update("HEAD", old, new, old_text, new, f"switch: moving from {old_text} to {ref}", target):
            raise RefConflictError("HEAD moved while switching")
        return target or ""

    def _empty_head(self) -> bool:
        try:
            return self.head_commit() is None
        except CorruptRefError:
            return False

    # ---- tags --------------------------------------------------------------------------------------------
    def tag(
        self,
        name: str,
        description: str | None,
        commit_ref: str | None,
        model_card: str | Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
    ) -> str:
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
        if not self.update(f"tags/{name}", None, canonical_dumps(doc).decode(), None, target, "tag: created"):
            raise RefExistsError(f"tag {name!r} already exists")
        return target

    def delete_tag(self, name: str) -> None:
        cur = self.store.get_ref(f"tags/{validate_ref_name(name, 'tag')}")
        if cur is None:
            raise RefNotFoundError(f"tag {name!r} not found")
        self.update(f"tags/{name}", cur, None, self.value_for_log(f"tags/{name}"), None, "tag: deleted")

    def move_tag(self, name: str, commit_ref: str, description: str | None = None) -> None:
        validate_ref_name(name, "tag")
        target = self.resolve(commit_ref)
        for _ in range(CAS_TRIES):
            cur = self.store.get_ref(f"tags/{name}")
            doc = parse_tag(f"tags/{name}", cur) if cur else {}
            old = doc.get("commit")
            doc.update({"commit": target, "time": time.time()})
            if description is not None:
                doc["description"] = description
            doc.setdefault("description", None)
            doc.setdefault("model_card", None)
            doc.setdefault("metadata", {})
            text = canonical_dumps(doc).decode()
            if self.update(f"tags/{name}", cur, text, old, target, f"tag: moved ({description or 'no description'})"):
                return
        raise RefConflictError(f"tag {name!r} kept moving")

    def list_tags(self) -> list[dict[str, Any]]:
        out = []
        for ref, value in self.store.list_refs("tags/").items():
            try:
                doc = parse_tag(ref, value)
            except CorruptObjectError as exc:  # listed elsewhere by fsck; one bad tag must not hide the rest
                log.warning("skipping damaged tag: %s", exc)
                continue
            doc["name"] = ref[len("tags/") :]
            out.append(doc)
        return out

    # ---- reflog ------------------------------------------------------------------------------------------
    def full_name(self, ref: str) -> str:
        """``main`` -> ``heads/main``, ``v1`` -> ``tags/v1``; ``HEAD`` and full names stay as they are."""
        if ref == "HEAD" or ref.startswith(("heads/", "tags/")):
            return ref
        validate_ref_name(ref, "ref")
        if self.store.get_ref(f"heads/{ref}") is not None or self.reflog.raw(f"heads/{ref}"):
            return f"heads/{ref}"
        if self.store.get_ref(f"tags/{ref}") is not None or self.reflog.raw(f"tags/{ref}"):
            return f"tags/{ref}"
        raise RefNotFoundError(f"unknown ref {ref!r}: no branch, tag or reflog of that name")

    def log_of(self, ref: str) -> list[ReflogEntry]:
        """The reflog of ``ref`` (a branch, tag, ``HEAD`` or full name), newest first."""
        full = self.full_name(ref)
        return self.reflog.entries(full, self.value_for_log(full))

    def _resolve_at(self, name: str, n: int) -> str:
        entries = self.log_of(name or "HEAD")
        if n >= len(entries):
            raise RefNotFoundError(f"{name}@{{{n}}}: the reflog of {name or 'HEAD'} has only {len(entries)} entries")
        entry = entries[n]
        value = entry.commit if entry.ref == "HEAD" else entry.new
        if value is None:
            raise RefNotFoundError(f"{name}@{{{n}}} is a deletion ({entry.reason}); try {name}@{{{n + 1}}}")
        if not self.history.exists(value):
            raise RefNotFoundError(f"{name}@{{{n}}}: commit {value[:12]} is no longer in the store (gc expired it)")
        return value

    # ---- resolution --------------------------------------------------------------------------------------
    def resolve(self, ref: str | None = None) -> str:
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
        at = _AT.match(base)
        commit = self._resolve_at(at.group(1), int(at.group(2))) if at else self._resolve_base(base)
        for _ in range(steps):
            parents = self.history.read_commit(commit).parents
            if not parents:
                raise RefNotFoundError(f"{ref!r} goes past the first commit")
            commit = parents[0]
        return commit

    def _resolve_base(self, ref: str) -> str:
        if ref == "HEAD":
            head = self.head_commit()
            if head is None:
                raise RefNotFoundError("HEAD has no commits yet")
            return head
        if not re.search(r"[\x00]|\.\.", ref) and re.fullmatch(r"[A-Za-z0-9._\-/]+", ref):
            if self.store.get_ref(f"heads/{ref}") is not None:
                return str(self.read(f"heads/{ref}")[1])
            tag = self.store.get_ref(f"tags/{ref}")
            if tag is not None:
                return str(parse_tag(f"tags/{ref}", tag)["commit"])
            if "/" in ref and self.store.get_ref(f"{TRACKING_PREFIX}{ref}") is not None:  # origin/main
                return str(self.read(f"{TRACKING_PREFIX}{ref}")[1])
        if _HEX.fullmatch(ref):
            if len(ref) == 64:
                if self.store.has(commit_key(ref)):
                    return ref
            else:
                matches = [c for c in self.history.commit_ids(prefix=ref[:2]) if c.startswith(ref)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise AmbiguousRefError(f"short hash {ref!r} is ambiguous: {', '.join(m[:12] for m in matches)}")
        raise RefNotFoundError(f"unknown ref {ref!r} (not a branch, tag or commit hash)")

    def targets(self, strict: bool = False) -> set[str]:
        """Commits the refs name (remote-tracking branches included); ``strict`` (gc) raises on any damaged ref
        instead of skipping or keeping it."""
        targets = set()
        for prefix in ("heads/", TRACKING_PREFIX):  # fetched commits stay until the remote drops them
            for name, value in self.store.list_refs(prefix).items():
                if strict:
                    self.read(name)
                targets.add(value.strip())
        for name, value in self.store.list_refs("tags/").items():
            try:
                targets.add(parse_tag(name, value)["commit"])
            except CorruptObjectError:
                if strict:
                    raise CorruptRefError(name, value, "not a tag document naming a commit") from None
        head = self.head() if strict else (self.store.get_ref("HEAD") or "").strip()
        if head and not head.startswith("ref: "):
            targets.add(head)
        return targets
