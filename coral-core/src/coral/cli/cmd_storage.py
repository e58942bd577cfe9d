"""Commands about storage: ``gc``, ``fsck``, ``du``, ``repack``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ObjectNotFoundError
from ..objects.tensors import TensorEntry, chunk_key, pack_bytes
from ..version_control.repository import Repository
from . import cmd_remote, history
from .output import Output, human_bytes, human_time, iso_time, ratio, short


def run_gc(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.status("Collecting garbage..."):
        result = repo.gc(expire_reflog=getattr(args, "expire_reflog", None))
    if out.json_mode:
        out.json(result)
        return 0
    out.line(
        f"Removed {result['objects_removed']} objects and {result['temp_files_removed']} temp files, "
        f"freed {human_bytes(result['bytes_freed'])}"
    )
    return 0


def run_fsck(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    """Exit 1 when anything reachable is damaged; each problem (each damaged object once, with the commits and
    tensors it affects) on its own line, then a one-line summary."""
    if getattr(args, "remote", None) or getattr(args, "repair", None):
        return cmd_remote.run_fsck_remote(repo, args, out)
    with out.status("Verifying every reachable commit and chunk..."):
        result = repo.fsck()
    if out.json_mode:
        out.json(result)
    else:
        for problem in result["errors"]:
            out.line(f"damaged: {problem}")
        if result["ok"]:
            out.line(
                f"ok: {result['commits']} commits, {result['chunks_checked']} chunks verified; "
                f"{result['unreferenced_objects']} unreferenced objects, {result['temp_files']} temp files"
                + (
                    " (coral gc removes them)"
                    if result["unreferenced_objects"] or result["temp_files"]
                    else ""
                )
            )
    if not result["ok"]:
        objs = result.get("damaged_objects", [])
        commits = {c for d in objs for c in d["commits"]}
        tensors = {t for d in objs for t in d["tensors"]}
        reach = f" affecting {len(commits)} commit(s) and {len(tensors)} tensor name(s)" if objs else ""
        out.err.print(
            f"error: repository is damaged: {len(result['errors'])} problem(s) found, "
            f"{len(objs)} damaged object(s){reach}",
            soft_wrap=True,
            markup=False,
        )
        return 1
    return 0


def run_du(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    """Per commit (or, with REF, per tensor): logical bytes, stored bytes, and what it newly added."""
    stats = repo.stats()
    sizes: dict[str, int] = {}

    def size(chunk: str) -> int:
        if chunk not in sizes:
            try:
                sizes[chunk] = repo.store.size(chunk_key(chunk))
            except ObjectNotFoundError:
                sizes[chunk] = 0
        return sizes[chunk]

    doc: dict[str, Any] = {"summary": stats}
    if args.ref is not None:
        doc["commit"] = cid = repo.resolve(args.ref)
        doc["tensors"] = _tensor_costs(repo, cid, size)
        if args.limit is not None:
            doc["tensors"] = doc["tensors"][: args.limit]
    else:
        doc["commits"] = _commit_costs(repo, size)
        if args.limit is not None:
            doc["commits"] = doc["commits"][: args.limit]
    if out.json_mode:
        out.json(doc)
        return 0
    out.line(
        f"{stats['commits']} commits, {stats['objects']} objects: {human_bytes(stats['logical_bytes'])} logical, "
        f"{human_bytes(stats['unique_bytes'])} unique, {human_bytes(stats['stored_bytes'])} stored"
    )
    out.line(
        f"dedup {ratio(stats['dedup_ratio'])}, compression {ratio(stats['compression_ratio'])}, "
        f"total {ratio(stats['total_ratio'])}"
    )
    out.line()
    if args.ref is not None:
        table = out.table(
            "tensor",
            "dtype",
            "shape",
            "logical",
            "stored",
            "new",
            right=("logical", "stored", "new"),
            title=f"commit {short(doc['commit'])}: 'new' = stored bytes its parents do not have",
        )
        for t in doc["tensors"]:
            table.add_row(
                t["name"],
                t["dtype"],
                "x".join(map(str, t["shape"])) or "scalar",
                human_bytes(t["logical_bytes"]),
                human_bytes(t["stored_bytes"]),
                human_bytes(t["new_bytes"]),
            )
    else:
        table = out.table(
            "commit",
            "date",
            "tensors",
            "logical",
            "stored",
            "new",
            "message",
            right=("tensors", "logical", "stored", "new"),
            title="'new' = stored bytes first added by that commit",
        )
        for c in doc["commits"]:
            table.add_row(
                short(c["hash"]),
                human_time(c["timestamp"]),
                str(c["num_tensors"]),
                human_bytes(c["logical_bytes"]),
                human_bytes(c["stored_bytes"]),
                human_bytes(c["new_bytes"]),
                (c["message"].splitlines() or [""])[0] + (" [pruned]" if c["pruned"] else ""),
            )
    out.print_table(table)
    return 0


def _commit_costs(repo: Repository, size: Any) -> list[dict[str, Any]]:
    infos = history.collect(repo, history.all_starts(repo))
    order = history.topo_order(infos)
    seen: set[str] = set()
    rows: dict[str, dict[str, Any]] = {}
    for cid in reversed(order):  # oldest first: a chunk's cost goes to the first commit holding it
        info = infos[cid]
        chunks: set[str] = set()
        if not info.pruned:
            for entry in repo.get_commit(cid).tree.values():
                chunks.update(entry.chunks)
        new = chunks - seen
        seen |= chunks
        rows[cid] = {
            "hash": cid,
            "time": iso_time(info.timestamp),
            "timestamp": info.timestamp,
            "message": info.message,
            "pruned": info.pruned,
            "num_tensors": info.num_tensors,
            "logical_bytes": 0 if info.pruned else info.nbytes,
            "stored_bytes": sum(size(c) for c in chunks),
            "new_bytes": sum(size(c) for c in new),
        }
    return [rows[c] for c in order]


def _tensor_costs(repo: Repository, cid: str, size: Any) -> list[dict[str, Any]]:
    commit = repo.get_commit(cid)
    pruned = repo.is_pruned(cid)
    parent_chunks: set[str] = set()
    for p in commit.parents:
        if not repo.is_pruned(p):
            for entry in repo.get_commit(p).tree.values():
                parent_chunks.update(entry.chunks)
    rows: list[dict[str, Any]] = []
    shared = pack_bytes(commit.tree)
    for name, entry in commit.tree.items():
        # a pack's cost is split among the tensors in it by their sizes
        def share(n: int, e: TensorEntry = entry) -> int:
            return n * e.nbytes // shared[e.chunks[0]] if e.packed else n

        stored = 0 if pruned else sum(share(size(c)) for c in entry.chunks)
        new = 0 if pruned else sum(share(size(c)) for c in set(entry.chunks) - parent_chunks)
        rows.append(
            {
                "name": name,
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "logical_bytes": entry.nbytes,
                "stored_bytes": stored,
                "new_bytes": new,
            }
        )
    rows.sort(key=lambda r: (-r["stored_bytes"], r["name"]))
    return rows


def run_repack(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.status("Re-encoding older chunks as deltas..."):
        queued = repo.pack_pending()  # what a finished or killed process left queued
        result = repo.repack(args.branch, args.max_commits)
    result = {
        "chunks": result["chunks"] + queued["chunks"],
        "bytes_saved": result["bytes_saved"] + queued["bytes_saved"],
        "queued_commits": queued["commits"],
    }
    if out.json_mode:
        out.json(result)
        return 0
    out.line(f"Re-encoded {result['chunks']} chunks as deltas, saved {human_bytes(result['bytes_saved'])}")
    return 0
