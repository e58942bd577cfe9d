"""Repack planning: which older chunks become reverse deltas against the next newer commit, and in what order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from ..errors import ObjectNotFoundError
from ..objects.tensors import MAX_DELTA_DEPTH, ObjectStore, TensorEntry
from ..store.base import Store
from .history import History


def repack(
    store: Store,
    objects: ObjectStore,
    history: History,
    start: str | None,
    max_commits: int | None = None,
    *,
    serial: bool = False,
) -> dict[str, int]:
    """Re-encode older chunks of the history from ``start`` as deltas against the same place in the next
    newer commit (see ``Repository.repack``). ``serial``: one chunk at a time in the calling thread (the
    background packer, which must not load the shared pool). Returns ``{"chunks": n, "bytes_saved": b}``."""
    heads = set(store.list_refs("heads/").values())
    protected: set[str] = set()
    for head in heads:
        if not history.is_pruned(head):
            for e in history.read_commit(head).tree.values():
                protected.update(e.chunks)
    more: Iterator[str] = iter(())
    if max_commits is None:
        all_ids = [i.hash for i in history.log(start) if not i.pruned] if start is not None else []
    else:
        more = history.first_parent_ids(start)
        all_ids = list(itertools.islice(more, max_commits + 2))
    ids = all_ids if max_commits is None else all_ids[: max_commits + 1]
    trees: dict[str, dict[str, TensorEntry]] = {}

    def tree(cid: str) -> dict[str, TensorEntry]:
        if cid not in trees:
            trees[cid] = history.read_commit(cid).tree
        return trees[cid]

    def commit_at(j: int) -> str | None:
        while len(all_ids) <= j:
            nxt = next(more, None)
            if nxt is None:
                return None
            all_ids.append(nxt)
        return all_ids[j]

    def height(k: int, name: str, idx: int, chunk: str) -> int:
        """How many older deltas chain through ``chunk`` (counted up to MAX_DELTA_DEPTH + 1): walk back
        version by version of this tensor chunk, past commits where it is unchanged."""
        n, cur, j = 0, chunk, k + 2
        while n <= MAX_DELTA_DEPTH:
            while True:
                cid = commit_at(j)
                if cid is None:
                    return n
                e = tree(cid).get(name)
                if e is None or len(e.chunks) <= idx:
                    return n
                if e.chunks[idx] != cur:
                    break
                j += 1
            prev = e.chunks[idx]
            try:
                if objects.header(prev).base != cur:
                    return n
            except (ObjectNotFoundError, ValueError):
                return n
            n, cur, j = n + 1, prev, j + 1
        return n

    def run(task: tuple[str, str | None, str, int]) -> int:
        co, base, dtype, h = task
        try:
            return objects.reencode_delta(co, base, dtype, height=h)
        except ObjectNotFoundError:
            return 0

    done = saved = 0
    with store.lock("gc", exclusive=False):
        for k, (newer, older) in enumerate(zip(ids, ids[1:], strict=False)):
            tn, to = tree(newer), tree(older)
            tasks: dict[str, tuple[str, str | None, str, int]] = {}
            in_chains: set[str] = set()  # chunks some task reads as (part of) its base
            for name, eo in to.items():
                en = tn.get(name)
                same_shape = en is not None and en.dtype == eo.dtype and len(en.chunks) == len(eo.chunks)
                for idx, co in enumerate(eo.chunks):
                    cn = en.chunks[idx] if same_shape and en is not None else None
                    if co == cn or co in protected or co in tasks:
                        continue
                    try:
                        if objects.header(co).base is not None:
                            continue
                        base: str | None = None
                        h = 0
                        if cn is not None:
                            chain_n = [cn, *objects.chain(cn)]
                            h = height(k, name, idx, co)
                            # keep chains bounded: the longest chain through ``co`` after re-encoding
                            if h + len(chain_n) <= MAX_DELTA_DEPTH:
                                base = cn
                                in_chains.update(chain_n)
                    except ObjectNotFoundError:
                        continue
                    tasks[co] = (co, base, eo.dtype, h)
            # chunks no other task's base depends on are re-encoded in parallel; the rest one by one
            parallel = [t for co, t in tasks.items() if co not in in_chains]
            in_order = [t for co, t in tasks.items() if co in in_chains]
            if serial:
                gains = [run(t) for t in parallel] + [run(t) for t in in_order]
            else:
                gains = list(objects.parallel_map(run, parallel)) + [run(t) for t in in_order]
            done += sum(1 for g in gains if g)
            saved += sum(gains)
    return {"chunks": done, "bytes_saved": saved}
