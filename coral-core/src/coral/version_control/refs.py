"""Refs: branches, tags and HEAD, resolving names to commit ids, and every ref update (one CAS per move).

Like dulwich's ``RefsContainer``: this module is the only one that reads or moves ``heads/``, ``tags/`` and
``HEAD``; history walks are asked of :class:`~coral.version_control.history.History`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from ..errors import (
    AmbiguousRefError,
    CorruptObjectError,
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

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
SYMBOLIC = "ref: heads/"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")


def commit_id_of(ref: str, value: str) -> str:
    """A ref's value must be a 64-hex commit id; anything else (a path, NUL, junk) is damage, not a lookup."""
    if not is_commit_id(value):
        raise CorruptObjectError(f"ref {ref}", f"does not hold a commit id: {value[:80]!r}")
    return value


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
    """Branches, tags and HEAD of one store."""

    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.history = history

    # ---- HEAD and branches -------------------------------------------------------------------------------
    def head(self) -> str:
        """HEAD's value: ``ref: heads/NAME`` when on a branch, a commit id when detached ("" when absent)."""
        return self.store.get_ref("HEAD") or ""

    @property
    def current_branch(self) -> str | None:
        head = self.head()
        return head[len(SYMBOLIC) :] if head.startswith(SYMBOLIC) else None

    def head_ref(self) -> str:
        """The ref a commit moves: ``heads/<current branch>``, or ``HEAD`` when detached."""
        branch = self.current_branch
        return f"heads/{branch}" if branch else "HEAD"

    def branch_head(self, branch: str) -> str | None:
        return self.store.get_ref(f"heads/{branch}")

    def head_commit(self) -> str | None:
        head = self.head()
        if head.startswith(SYMBOLIC):
            return self.branch_head(head[len(SYMBOLIC) :])
        return head or None

    def list_branches(self) -> list[str]:
        return [name[len("heads/") :] for name in self.store.list_refs("heads/")]

    def branch_targets(self) -> dict[str, str]:
        """``{branch: commit id}`` of every branch."""
        return {name[len("heads/") :]: value for name, value in self.store.list_refs("heads/").items()}

    def create_branch(self, name: str, start: str | None = None) -> str:
        validate_ref_name(name, "branch")
        target = self.resolve(start) if start is not None else self.head_commit()
        if target is None:
            raise RefNotFoundError("cannot create a branch in an empty repository: commit first")
        if not self.store.compare_and_swap(f"heads/{name}", None, target):
            raise RefExistsError(f"branch {name!r} already exists")
        return target

    def delete_branch(self, name: str, force: bool = False) -> str:
        """Delete a branch; without ``force`` only when another branch or tag still reaches its head."""
        validate_ref_name(name, "branch")
        if name == self.current_branch:
            raise InvalidArgumentError("branch", name, "is checked out; switch to another branch first")
        cur = self.branch_head(name)
        if cur is None:
            raise RefNotFoundError(f"branch {name!r} not found")
        if not force and not self._reached_elsewhere(name, cur):
            raise UnmergedBranchError(
                f"branch {name!r} is not merged: its head {cur[:12]} is not reachable from any other branch or "
                f"tag; delete it anyway with force=True (coral branch -D {name})"
            )
        if not self.store.compare_and_swap(f"heads/{name}", cur, None):
            raise RefConflictError(f"branch {name!r} moved while deleting it")
        return cur

    def _reached_elsewhere(self, name: str, commit: str) -> bool:
        """True when ``commit`` is an ancestor of (or equal to) a branch other than ``name``, a tag or HEAD."""
        starts = [v for b, v in self.branch_targets().items() if b != name]
        starts += [t["commit"] for t in self.list_tags()]
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
        """Point HEAD at branch ``ref`` or detach it at a tag/hash/``HEAD~N``; returns the commit ("" if none)."""
        old = self.store.get_ref("HEAD")
        target: str | None
        if is_ref_name(ref) and self.branch_head(ref) is not None:  # HEAD~2, hashes: not branch names
            new = f"{SYMBOLIC}{ref}"
            target = self.branch_head(ref)
        elif isinstance(ref, str) and ref in self.list_branches() + [DEFAULT_BRANCH] and self.head_commit() is None:
            new, target = f"{SYMBOLIC}{ref}", None
        else:
            target = self.resolve(ref)
            new = target
        if not self.store.compare_and_swap("HEAD", old, new):
            raise RefConflictError("HEAD moved while switching")
        return target or ""

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
        if not self.store.compare_and_swap(f"tags/{name}", None, canonical_dumps(doc).decode()):
            raise RefExistsError(f"tag {name!r} already exists")
        return target

    def delete_tag(self, name: str) -> None:
        cur = self.store.get_ref(f"tags/{validate_ref_name(name, 'tag')}")
        if cur is None:
            raise RefNotFoundError(f"tag {name!r} not found")
        self.store.compare_and_swap(f"tags/{name}", cur, None)

    def move_tag(self, name: str, commit_ref: str, description: str | None = None) -> None:
        validate_ref_name(name, "tag")
        target = self.resolve(commit_ref)
        for _ in range(CAS_TRIES):
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
        commit = self._resolve_base(base)
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
            return commit_id_of("HEAD", head)
        if not re.search(r"[\x00]|\.\.", ref) and re.fullmatch(r"[A-Za-z0-9._\-/]+", ref):
            branch = self.store.get_ref(f"heads/{ref}")
            if branch is not None:
                return commit_id_of(f"heads/{ref}", branch)
            tag = self.store.get_ref(f"tags/{ref}")
            if tag is not None:
                return str(parse_tag(f"tags/{ref}", tag)["commit"])
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
        """Commits the refs name; ``strict`` (gc) raises on a damaged tag instead of skipping it."""
        targets = set()
        for _name, value in self.store.list_refs("heads/").items():
            targets.add(value)
        for name, value in self.store.list_refs("tags/").items():
            try:
                targets.add(parse_tag(name, value)["commit"])
            except CorruptObjectError:
                if strict:
                    raise
        head = self.head()
        if head and not head.startswith("ref: "):
            targets.add(head)
        return targets
