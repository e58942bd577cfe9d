"""Writing a commit: the commit object first, then (once every chunk is durable) the ref by compare-and-swap.

A crash at any instant leaves every earlier commit intact and at most unreferenced objects, which gc removes.
"""

from __future__ import annotations

import time
from typing import Any

import blake3

from ..errors import RefConflictError
from ..objects.tensors import PendingWrites, TensorEntry
from ..store.base import Store
from .commit import Commit, commit_key
from .documents import CAS_TRIES
from .history import History
from .refs import Refs
from .staging import check_tree_stored


def wait_all_pending(pending: list[PendingWrites]) -> None:
    """Wait for every pending write; then raise the first failure."""
    first: BaseException | None = None
    for p in pending:
        try:
            p.wait()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once all have ended
            first = first or exc
    if first is not None:
        raise first


def commit_tree(
    store: Store,
    refs: Refs,
    history: History,
    tree: dict[str, TensorEntry],
    message: str,
    metadata: dict[str, Any],
    extra_parents: list[str] | None,
    pending: list[PendingWrites] | None = None,
    check_stored: bool = True,
    reason: str = "commit",
) -> str:
    """Write the commit object, wait for the tree's chunks to be durable, then move the ref (CAS).

    The commit object is written while ``pending`` chunks are still being fsynced: nothing names it
    until the ref moves, and the ref moves only after every chunk and the commit are on disk. A damaged ref
    raises CorruptRefError before anything is written; the reflog entry is written with the commit object."""
    ref = refs.head_ref()
    first_line = message.splitlines()[0] if message else ""
    with store.lock("gc", exclusive=False):
        durable = False
        for _ in range(CAS_TRIES):
            expected, head = refs.read(ref)
            parents = [head] if head else []
            for p in extra_parents or []:
                if p not in parents:
                    parents.append(p)
            # a child is always newer than its parents, so log()'s time order is the chain's order even
            # when a racing writer took its clock reading first and then lost the compare-and-swap
            stamp = max([time.time(), *(history.parent_time(p) + 1e-6 for p in parents)])
            commit = Commit(parents, message, metadata, tree, stamp)
            raw = commit.to_bytes()
            cid = blake3.blake3(raw).hexdigest()  # = commit.id, without serializing twice
            store.put(commit_key(cid), raw)
            # the reflog entry is written while the chunks are still being fsynced, before the ref moves
            entry = refs.reflog.write(ref, head, cid, f"{reason}: {first_line}")
            if not durable:
                try:
                    wait_all_pending(pending or [])
                    if check_stored:  # commit_weights held the writers' lock all along: nothing was freed
                        check_tree_stored(store, tree)
                except BaseException:
                    refs.reflog.discard(entry)
                    raise
                durable = True
            if refs.swap(ref, expected, cid, entry):
                history.note_commit(cid, stamp)  # the next commit's parent: no need to read it back
                return cid
            time.sleep(0.001)
    raise RefConflictError(f"could not update {ref!r}: too many concurrent writers")
