"""Commit documents: parents, time, message, metadata and the tree of tensors. Id = BLAKE3 of canonical JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3

from ..errors import CorruptObjectError
from ..objects.tensors import TensorEntry
from .jsonsafe import canonical_dumps, from_jsonable, to_jsonable
from .names import validate_tensor_name

FORMAT = 1


def commit_key(commit_id: str) -> str:
    return f"commits/{commit_id[:2]}/{commit_id[2:]}"


@dataclass
class Commit:
    """An immutable snapshot: which tensors, which parents, and the JSON-safe training metadata."""

    parents: list[str]
    message: str
    metadata: dict[str, Any]
    tree: dict[str, TensorEntry]
    timestamp: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "parents": list(self.parents),
            "message": self.message,
            "metadata": to_jsonable(self.metadata),
            "time": self.timestamp,
            "tree": {name: e.to_json() for name, e in sorted(self.tree.items())},
        }
        return canonical_dumps(doc)

    @property
    def id(self) -> str:
        return blake3.blake3(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, commit_id: str, raw: bytes) -> Commit:
        if blake3.blake3(raw).hexdigest() != commit_id:
            raise CorruptObjectError(commit_id, "commit content does not match its hash")
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            parents = [str(p) for p in doc["parents"]]
            for p in parents:
                if len(p) != 64 or any(ch not in "0123456789abcdef" for ch in p):
                    raise ValueError(f"bad parent id {p[:80]!r}")
            tree = {}
            for name, entry in doc["tree"].items():
                validate_tensor_name(name)
                tree[name] = TensorEntry.from_json(name, entry)
            return cls(parents, str(doc["message"]), from_jsonable(doc.get("metadata") or {}), tree, float(doc["time"]))
        except CorruptObjectError:
            raise
        except Exception as exc:
            raise CorruptObjectError(commit_id, f"unreadable commit: {exc}") from None


@dataclass
class CommitInfo:
    """What ``log`` returns for each commit."""

    hash: str
    parents: list[str]
    timestamp: float
    message: str
    metadata: dict[str, Any]
    pruned: bool = False
    num_tensors: int = 0
    nbytes: int = 0

    @property
    def short_hash(self) -> str:
        return self.hash[:8]

    @property
    def commit_hash(self) -> str:
        return self.hash

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, tz=UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "parents": self.parents,
            "time": self.time.isoformat(),
            "message": self.message,
            "metadata": to_jsonable(self.metadata),
            "pruned": self.pruned,
            "num_tensors": self.num_tensors,
            "nbytes": self.nbytes,
        }
