"""``coral compare A B [C ...]``: chosen commits side by side: step, metrics, stored size, differing hparams."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidArgumentError
from ..version_control.repository import Repository
from . import provenance_view, series
from .output import Output, human_bytes, short


def add_parser(sub: Any) -> None:
    """Register ``coral compare`` on the subcommand parser."""
    p = sub.add_parser("compare", help="commits side by side: metrics, step, stored size, differing hparams")
    p.add_argument("refs", nargs="+", metavar="REF", help="two or more commits, branches or tags")
    p.add_argument("--all-hparams", action="store_true", help="list every hyperparameter, not only those that differ")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def describe(repo: Repository, ref: str) -> dict[str, Any]:
    """One column of the comparison: what a commit records and what it costs on disk."""
    cid = repo.resolve(ref)
    commit = repo.get_commit(cid)
    meta = commit.metadata
    pruned = repo.is_pruned(cid)
    sizes = {} if pruned else repo.chunk_sizes(cid)
    metrics = {n: v for n in series.metric_names([meta]) if (v := series.metric_value(meta, n)) is not None}
    prov = provenance_view.config_of(meta)
    return {
        "ref": ref,
        "hash": cid,
        "message": commit.message,
        "step": meta.get("global_step"),
        "epoch": meta.get("epoch"),
        "metrics": metrics,
        "pruned": pruned,
        "logical_bytes": sum(e.nbytes for e in commit.tree.values()),
        "stored_bytes": sum(s["stored"] for s in sizes.values()),
        "hparams": provenance_view.hparams_of(meta),
        "code": prov.get("git.commit"),
        "dirty": prov.get("git.dirty"),
    }


def differing(columns: list[dict[str, Any]], field: str) -> list[str]:
    """Keys of ``field`` whose value is not the same in every column (missing counts as a value)."""
    keys = list(dict.fromkeys(k for c in columns for k in c[field]))
    marker = object()
    return [k for k in keys if len({repr(c[field].get(k, marker)) for c in columns}) > 1]


def run_compare(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if len(args.refs) < 2:
        raise InvalidArgumentError("REF", " ".join(args.refs), "give at least two commits to compare")
    columns = [describe(repo, ref) for ref in args.refs]
    metric_keys = list(dict.fromkeys(k for c in columns for k in c["metrics"]))
    hparam_keys = list(dict.fromkeys(k for c in columns for k in c["hparams"])) if args.all_hparams \
        else differing(columns, "hparams")
    if out.json_mode:
        out.json({"commits": columns, "metrics": metric_keys, "differing_hparams": differing(columns, "hparams")})
        return 0
    # a hash given in full would fold the column: its short form names it as well
    table = out.table("", *[short(c["hash"]) if c["hash"].startswith(c["ref"]) and len(c["ref"]) > 12 else c["ref"]
                            for c in columns])
    show = provenance_view.show_value

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("commit", [short(c["hash"]) + (" [pruned]" if c["pruned"] else "") for c in columns])
    row("step", [show(c["step"]) for c in columns])
    row("epoch", [show(c["epoch"]) for c in columns])
    for key in metric_keys:
        values = [c["metrics"].get(key) for c in columns]
        numbers = [v for v in values if v is not None]
        best = None
        if len(numbers) > 1:
            lower = any(w in key.lower() for w in series.LOWER_IS_BETTER)
            best = (min if lower else max)(numbers)
        row(key, ["-" if v is None else series.format_value(v) + (" *" if v == best else "") for v in values])
    row("stored", ["pruned" if c["pruned"] else human_bytes(c["stored_bytes"]) for c in columns])
    row("code", [(c["code"] or "-")[:12] + (" (dirty)" if c["dirty"] else "") for c in columns])
    for key in hparam_keys:
        row(f"hparams.{key}", [show(c["hparams"].get(key, "(absent)")) for c in columns])
    out.print_table(table)
    if not hparam_keys:
        recorded = any(c["hparams"] for c in columns)
        out.line("hyperparameters: identical" if recorded else "hyperparameters: none recorded")
    out.line("* best value of the metric among these commits")
    return 0
