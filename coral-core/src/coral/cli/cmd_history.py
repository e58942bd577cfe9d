"""Read commands about history: ``status``, ``log``, ``show``, ``diff``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from ..version_control.repository import Repository
from . import cmd_provenance, history, provenance_view
from .output import Output, human_bytes, human_time, iso_time, short


def run_status(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    head = repo.head_commit()
    info: dict[str, Any] = {
        "repository": str(repo.path) if repo.path else repo.store.describe(),
        "branch": repo.current_branch,
        "detached": repo.current_branch is None,
        "head": head,
        "message": None,
        "num_tensors": 0,
        "nbytes": 0,
        "pruned": False,
        "staged": len(repo.staged),
        "branches": len(repo.list_branches()),
        "tags": len(repo.list_tags()),
        "packing_pending": repo.pending_background().get("packing", 0),
    }
    if head:
        commit = repo.get_commit(head)
        info.update(
            message=commit.message,
            num_tensors=len(commit.tree),
            nbytes=sum(e.nbytes for e in commit.tree.values()),
            pruned=repo.is_pruned(head),
        )
    if out.json_mode:
        out.json(info)
        return 0
    out.line(f"On branch {info['branch']}" if info["branch"] else f"HEAD detached at {short(head)}")
    if head:
        out.line(f"HEAD {short(head)} {info['message']}" + (" [pruned]" if info["pruned"] else ""))
        out.line(f"{info['num_tensors']} tensors, {human_bytes(info['nbytes'])}")
    else:
        out.line("No commits yet")
    out.line(f"{info['staged']} staged, {info['branches']} branches, {info['tags']} tags")
    if info["packing_pending"]:
        out.line(
            f"Packing pending for {info['packing_pending']} commit(s): resumes in the background on the next "
            "write, or run `coral repack`"
        )
    return 0


def run_log(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if args.all:
        starts = history.all_starts(repo)
    elif args.ref is not None:
        starts = [repo.resolve(args.ref)]
    else:
        head = repo.head_commit()
        starts = [head] if head else []
    infos = history.collect(repo, starts)
    order = history.topo_order(infos)
    if args.limit is not None:
        order = order[: args.limit]
    decor = history.decorations(repo)
    if out.json_mode:
        rows = [
            infos[c].to_dict() | {"timestamp": infos[c].timestamp, "short_hash": c[:8], "refs": decor.get(c, [])}
            for c in order
        ]
        if getattr(args, "metrics", False):  # log --metrics (issue 29)
            sparklines = cmd_provenance.metric_sparklines([infos[c].metadata for c in order][::-1])
            out.json({"commits": rows, "metrics": sparklines})
        else:
            out.json(rows)
        return 0
    if not order:
        out.line("No commits yet")
        return 0
    if args.graph:
        for graph, cid in history.graph_rows(order, {c: infos[c].parents for c in order}):
            if cid is None:
                out.line(graph)
            else:
                out.line(Text(graph + " ") + _log_line(infos[cid], decor.get(cid, [])))
    else:
        for cid in order:
            out.line(_log_line(infos[cid], decor.get(cid, [])))
    if getattr(args, "metrics", False):  # log --metrics (issue 29)
        cmd_provenance.print_log_metrics(out, [infos[c].metadata for c in order])
    return 0


def _log_line(info: Any, refs: list[str]) -> Text:
    text = Text()
    text.append(info.hash[:8], style="yellow")
    text.append(" " + human_time(info.timestamp), style="dim")
    if refs:
        text.append(" (" + ", ".join(refs) + ")", style="cyan")
    text.append(" " + info.message.splitlines()[0] if info.message else " (no message)")
    metrics = history.key_metrics(info.metadata)
    if metrics:
        text.append("  " + " ".join(f"{k}={v}" for k, v in metrics), style="green")
    if info.pruned:
        text.append(" [pruned]", style="red")
    if isinstance(info.metadata, dict) and info.metadata.get("preempted"):
        text.append(" [preempted]", style="magenta")
    return text


def run_show(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    cid = repo.resolve(args.ref)
    commit = repo.get_commit(cid)
    pruned = repo.is_pruned(cid)
    sizes = repo.chunk_sizes(cid)
    tensors: list[dict[str, Any]] = [
        {
            "name": name,
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "logical_bytes": sizes[name]["logical"],
            "stored_bytes": sizes[name]["stored"],
            "layer_type": entry.layer_type,
        }
        for name, entry in sorted(commit.tree.items())
    ]
    refs = history.decorations(repo).get(cid, [])
    doc: dict[str, Any] = {
        "hash": cid,
        "parents": commit.parents,
        "time": iso_time(commit.timestamp),
        "timestamp": commit.timestamp,
        "message": commit.message,
        "metadata": commit.metadata,
        "pruned": pruned,
        "refs": refs,
        "tensors": tensors,
        "logical_bytes": sum(t["logical_bytes"] for t in tensors),
        "stored_bytes": sum(t["stored_bytes"] for t in tensors),
    }
    if out.json_mode:
        out.json(doc)
        return 0
    out.line(
        Text(f"commit {cid}", style="yellow")
        + Text(f" ({', '.join(refs)})" if refs else "", style="cyan")
        + Text(" [pruned]" if pruned else "", style="red")
    )
    if len(commit.parents) > 1:
        out.line("Merge:  " + " ".join(short(p) for p in commit.parents))
    elif commit.parents:
        out.line(f"Parent: {short(commit.parents[0])}")
    out.line(f"Date:   {human_time(commit.timestamp)}")
    out.line()
    for line in (commit.message or "(no message)").splitlines():
        out.line("    " + line)
    if commit.metadata:
        out.line()
        out.line("Metadata:")
        for line in _metadata_lines({k: v for k, v in commit.metadata.items() if k != "provenance"}):
            out.line("    " + line)
    cmd_provenance.print_provenance(out, commit.metadata)  # issue 29
    out.line()
    if pruned:
        out.line("Weights were pruned by retention: the tensors below are listed but no longer loadable.")
    table = out.table(
        "name",
        "dtype",
        "shape",
        "size",
        "stored",
        right=("size", "stored"),
        title=(
            f"{len(tensors)} tensors, {human_bytes(doc['logical_bytes'])} "
            f"({human_bytes(doc['stored_bytes'])} stored)"
        ),
    )
    for t in tensors:
        table.add_row(
            t["name"],
            t["dtype"],
            "x".join(map(str, t["shape"])) or "scalar",
            human_bytes(t["logical_bytes"]),
            human_bytes(t["stored_bytes"]),
        )
    out.print_table(table)
    return 0


def _metadata_lines(metadata: dict[str, Any], indent: str = "") -> list[str]:
    """Readable ``key: value`` lines; the bulky checkpoint skeletons are summarized (``--json`` has them all)."""
    lines = []
    for key, value in metadata.items():
        if key == "state_skeletons" and isinstance(value, dict):
            lines.append(f"{indent}{key}: {', '.join(sorted(value)) or 'none'} (see --json)")
        elif isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.extend(_metadata_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines


def run_diff(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    result = repo.diff(args.a, args.b)
    if getattr(args, "config", False):  # diff --config (issue 29)
        meta = [repo.get_commit(result[k]).metadata for k in ("from", "to")]
        result["config"] = provenance_view.config_diff(*meta)
    if out.json_mode:
        out.json(result)
        return 0
    a, b = result["from"], result["to"]
    out.line(f"diff {short(a)}..{short(b)}")
    if result["identical"]:
        out.line("No differences: every tensor is bit-identical.")
        if "config" in result:
            cmd_provenance.print_config_diff(out, result["config"])
        return 0
    table = out.table(
        "status", "name", "cosine", "max |diff|", "rel L2", right=("cosine", "max |diff|", "rel L2")
    )
    for name in result["changed"]:
        s = result["stats"].get(name)
        if s is None:
            table.add_row("changed", name, "-", "-", "-")
        else:
            table.add_row(
                "changed",
                name,
                f"{s['cosine_similarity']:.6f}",
                f"{s['max_abs_diff']:.4g}",
                f"{s['relative_l2']:.4g}",
            )
    for name in result["added"]:
        table.add_row("added", name, "", "", "")
    for name in result["removed"]:
        table.add_row("removed", name, "", "", "")
    out.print_table(table)
    out.line(
        f"{len(result['changed'])} changed, {len(result['added'])} added, {len(result['removed'])} removed"
    )
    if "config" in result:
        cmd_provenance.print_config_diff(out, result["config"])
    return 0
