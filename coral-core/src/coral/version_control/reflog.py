"""The reflog: one immutable object per ref update (old value, new value, time, reason), git's safety net.

An entry is written *before* the ref's compare-and-swap, so a crash leaves both or an orphan entry whose
update never happened; readers walk the chain back from the ref's current value, which skips orphans.
Entries are never rewritten; ``expire`` deletes whole entries, oldest first.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

from ..errors import CoralError, InvalidArgumentError
from ..store.base import Store
from .jsonsafe import canonical_dumps

log = logging.getLogger(__name__)

PREFIX = "reflog/"
DEFAULT_EXPIRE_DAYS = 30.0


@dataclass(frozen=True)
class ReflogEntry:
    """One update of ``ref``: ``old`` -> ``new`` (None: absent), with its time and one-line reason.

    For branches and tags the values are commit ids; for HEAD they are HEAD's text (``ref: heads/x`` or an id)
    and ``commit`` is the commit HEAD pointed at after the update."""

    ref: str
    old: str | None
    new: str | None
    time: float
    reason: str
    commit: str | None
    key: str

    def as_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "time": self.time, "reason": self.reason,
                "commit": self.commit}


def parse_expire(value: str | float | int | None) -> float | None:
    """``now``, ``never``, ``30d``/``12h``/``15m``/``10s`` or a number of days, as seconds (None: never)."""
    if value is None or value == "never":
        return None
    if value == "now":
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value) * 86400
    if isinstance(value, str) and value:
        unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}.get(value[-1])
        try:
            number = float(value[:-1] if unit else value)
        except ValueError:
            number = -1.0
        if number >= 0:
            return number * (unit or 86400)
    raise InvalidArgumentError("expire_reflog", value, "use 'now', 'never', a number of days or e.g. 30d, 12h")


class Reflog:
    """The reflogs of one store, kept as objects under ``reflog/<ref>/<time>-<id>``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, ref: str, old: str | None, new: str | None, reason: str, commit: str | None = None) -> str:
        """Durably record an update about to happen; returns the entry's key (``discard`` it if the update fails)."""
        key = f"{PREFIX}{ref}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        reason = " ".join(str(reason).split())[:200]
        doc = {"format": 1, "ref": ref, "old": old, "new": new, "time": time.time(), "reason": reason,
               "commit": commit if commit is not None else new}
        self.store.put(key, canonical_dumps(doc))
        return key

    def discard(self, key: str) -> None:
        """Drop the entry of an update that lost its compare-and-swap (it never happened)."""
        self.store.delete(key)

    def raw(self, ref: str, problems: list[str] | None = None) -> list[ReflogEntry]:
        """Every entry of ``ref`` as written, oldest first (orphans of crashed updates included); unreadable
        entries are skipped, and described in ``problems`` when it is given."""
        prefix = f"{PREFIX}{ref}/"
        out = []
        for key in sorted(k for k in self.store.list(prefix) if "/" not in k[len(prefix) :]):
            try:
                doc = json.loads(self.store.get(key))
                out.append(ReflogEntry(ref, _opt(doc.get("old")), _opt(doc.get("new")), float(doc["time"]),
                                       str(doc.get("reason", "")), _opt(doc.get("commit")), key))
            except (CoralError, ValueError, KeyError, TypeError) as exc:  # one bad entry must not hide the rest
                log.warning("skipping unreadable reflog entry %s: %s", key, exc)
                if problems is not None:
                    problems.append(f"reflog entry {key} is damaged: {exc}")
        return out

    def entries(self, ref: str, current: str | None) -> list[ReflogEntry]:
        """The updates that happened to ``ref``, newest first: the chain back from its ``current`` value
        (orphans skipped). When no entry reaches ``current`` (a damaged or hand-edited ref), the chain starts
        at the newest entry."""
        raw = self.raw(ref)
        if not raw:
            return []
        if not any(e.new == current for e in raw):
            current = raw[-1].new
        chain = []
        for e in reversed(raw):
            if e.new == current:
                chain.append(e)
                current = e.old
        return chain

    def check(self) -> list[str]:
        """A line per unreadable reflog entry (for fsck)."""
        problems: list[str] = []
        for ref in self.refs():
            self.raw(ref, problems)
        return problems

    def refs(self) -> list[str]:
        """Every ref that has reflog entries (deleted refs included)."""
        names = set()
        for key in self.store.list(PREFIX):
            names.add(key[len(PREFIX) :].rsplit("/", 1)[0])
        return sorted(names)

    def expire(self, cutoff: float, keep: set[str]) -> int:
        """Delete entries older than ``cutoff`` (a time), oldest first, except the keys in ``keep``."""
        doomed = []
        for ref in self.refs():
            doomed += [e for e in self.raw(ref) if e.time < cutoff and e.key not in keep]
        doomed.sort(key=lambda e: (e.key.rsplit("/", 1)[1], e.key))  # oldest first, across refs
        for e in doomed:
            self.store.delete(e.key)
        return len(doomed)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)

