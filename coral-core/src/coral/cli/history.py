"""Walking history for the CLI: commits reachable from refs, topological order, ref decorations, ASCII graph."""

from __future__ import annotations

import heapq
import math
from typing import Any, Iterable, Mapping

from ..errors import RefNotFoundError
from ..version_control.commit import CommitInfo
from ..version_control.remotes import tracking_refs
from ..version_control.repository import Repository


def collect(repo: Repository, starts: Iterable[str]) -> dict[str, CommitInfo]:
    """Every commit reachable from ``starts`` (commit hashes), with the fields ``coral log`` shows."""
    out: dict[str, CommitInfo] = {}
    frontier = list(starts)
    while frontier:
        cid = frontier.pop()
        if cid in out:
            continue
        try:
            c = repo.get_commit(cid)
        except RefNotFoundError:
            continue  # a dangling parent: fsck reports it, log just stops there
        out[cid] = CommitInfo(
            cid,
            list(c.parents),
            c.timestamp,
            c.message,
            c.metadata,
            repo.is_pruned(cid),
            len(c.tree),
            sum(e.nbytes for e in c.tree.values()),
        )
        frontier.extend(c.parents)
    return out


def all_starts(repo: Repository) -> list[str]:
    """Commits every branch, tag and a detached HEAD point at."""
    starts = [repo.resolve(b) for b in repo.list_branches()]  # validated: a damaged branch is refused
    starts += [t["commit"] for t in repo.list_tags()]
    starts += list(tracking_refs(repo).values())
    head = repo.head_commit()
    if head:
        starts.append(head)
    return starts


def topo_order(infos: Mapping[str, CommitInfo]) -> list[str]:
    """Children before parents; among commits ready to show, the newest first (what ``git log`` does)."""
    children = {cid: 0 for cid in infos}
    for info in infos.values():
        for p in set(info.parents):
            if p in children:
                children[p] += 1
    ready = [(-infos[c].timestamp, c) for c, n in children.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, cid = heapq.heappop(ready)
        order.append(cid)
        for p in set(infos[cid].parents):
            if p in children:
                children[p] -= 1
                if children[p] == 0:
                    heapq.heappush(ready, (-infos[p].timestamp, p))
    return order


def decorations(repo: Repository) -> dict[str, list[str]]:
    """``{commit: ["HEAD -> main", "dev", "tag: v1.0.0"]}`` like ``git log --decorate``."""
    out: dict[str, list[str]] = {}
    current = repo.current_branch
    head = repo.head_commit()
    if head and current is None:
        out.setdefault(head, []).append("HEAD")
    for ref, target in sorted(repo.store.list_refs("heads/").items()):
        name = ref[len("heads/") :]
        out.setdefault(target.strip(), []).append(f"HEAD -> {name}" if name == current else name)
    for name, target in sorted(tracking_refs(repo).items()):  # origin/main
        out.setdefault(target, []).append(name)
    for tag in sorted(repo.list_tags(), key=lambda t: t["name"]):
        out.setdefault(tag["commit"], []).append(f"tag: {tag['name']}")
    for labels in out.values():
        labels.sort(key=lambda s: (not s.startswith("HEAD"), s.startswith("tag: "), s))
    return out


def key_metrics(metadata: Mapping[str, Any], limit: int = 6) -> list[tuple[str, str]]:
    """``[("step", "100"), ("loss", "0.1234"), ("accuracy", "0.91")]`` from checkpoint metadata."""
    pairs: list[tuple[str, Any]] = []
    if _is_number(metadata.get("global_step")):
        pairs.append(("step", metadata["global_step"]))
    if _is_number(metadata.get("loss")):
        pairs.append(("loss", metadata["loss"]))
    metrics = metadata.get("metrics")
    if isinstance(metrics, Mapping):
        for name, value in metrics.items():
            if _is_number(value) and all(name != k for k, _ in pairs):
                pairs.append((str(name), value))
    return [(k, _fmt(v)) for k, v in pairs[:limit]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    return format(value, ".4g") if math.isfinite(value) else str(value)


def graph_rows(order: list[str], parents: Mapping[str, list[str]]) -> list[tuple[str, str | None]]:
    """Lay commits out in lanes: ``[(graph_text, commit or None)]``; ``None`` rows are connector lines.

    ``*`` marks a commit, ``|`` a lane waiting for its next commit, ``\\`` a merge's second parent
    branching off, ``/`` (with ``_`` for long jumps) lanes joining when they reach the same commit.
    """
    shown = set(order)
    lanes: list[str] = []
    rows: list[tuple[str, str | None]] = []
    for cid in order:
        if cid not in lanes:
            lanes.append(cid)
        i = lanes.index(cid)
        while True:
            dups = [j for j in range(i + 1, len(lanes)) if lanes[j] == cid]
            if not dups:
                break
            j = dups[-1]
            target = max(k for k in range(i, j) if lanes[k] == cid)  # join the nearest lane waiting for it
            rows.append((_fold_row(len(lanes), target, j), None))
            del lanes[j]
        rows.append((" ".join("*" if k == i else "|" for k in range(len(lanes))), cid))
        ps = [p for p in dict.fromkeys(parents.get(cid, [])) if p in shown]
        if not ps:
            n = len(lanes)
            del lanes[i]
            if i < n - 1:
                rows.append((_shift_left_row(n, i), None))
            continue
        lanes[i] = ps[0]
        for p in reversed(ps[1:]):
            rows.append((_branch_row(len(lanes), i), None))
            lanes.insert(i + 1, p)
    return rows


def _render(buf: list[str]) -> str:
    return "".join(buf).rstrip()


def _fold_row(n: int, i: int, j: int) -> str:
    """Lane ``j`` joins lane ``i``; lanes right of ``j`` move one place left."""
    buf = [" "] * (2 * n)
    for k in range(n):
        if k < j:
            buf[2 * k] = "|"
        elif k > j:
            buf[2 * k - 1] = "/"
    buf[2 * j - 1] = "/"
    for pos in range(2 * i + 1, 2 * j - 1, 2):
        buf[pos] = "_"
    return _render(buf)


def _shift_left_row(n: int, i: int) -> str:
    """Lane ``i`` ended (a root commit); lanes to its right move one place left."""
    buf = [" "] * (2 * n)
    for k in range(n):
        if k < i:
            buf[2 * k] = "|"
        elif k > i:
            buf[2 * k - 1] = "/"
    return _render(buf)


def _branch_row(n: int, i: int) -> str:
    """A merge at lane ``i`` opens a lane for its other parent at ``i + 1``; lanes right of ``i`` move right."""
    buf = [" "] * (2 * n + 2)
    for k in range(n):
        if k <= i:
            buf[2 * k] = "|"
        else:
            buf[2 * k + 1] = "\\"
    buf[2 * i + 1] = "\\"
    return _render(buf)
