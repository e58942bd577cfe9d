"""Small mutable JSON documents kept as refs under ``meta/`` (checkpoint history, indexes), changed by CAS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import CorruptObjectError, RefConflictError
from ..store.base import Store
from .jsonsafe import canonical_dumps, from_jsonable, to_jsonable

CAS_TRIES = 1000


def parse_document(key: str, raw: str) -> Any:
    """A stored JSON document (history, tag); damaged or hostile text is a CorruptObjectError naming the ref."""
    try:
        return from_jsonable(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise CorruptObjectError(f"ref {key}", f"not a valid JSON document: {exc}") from None


class Documents:
    """Named JSON documents of one store; every update is a compare-and-swap retry loop."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self, name: str) -> Any:
        raw = self.store.get_ref(f"meta/{name}")
        return None if raw is None else parse_document(f"meta/{name}", raw)

    def update(self, name: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace document ``name`` with ``fn(old)``; returns the new document."""
        key = f"meta/{name}"
        for _ in range(CAS_TRIES):
            raw = self.store.get_ref(key)
            new = fn(None if raw is None else parse_document(key, raw))
            # NaN/inf metrics are legal values: tag them like commit metadata does
            text = canonical_dumps(to_jsonable(new, f"document {name!r}")).decode()
            if self.store.compare_and_swap(key, raw, text):
                return new
            time.sleep(0.001)
        raise RefConflictError(f"document {name!r} kept changing")
