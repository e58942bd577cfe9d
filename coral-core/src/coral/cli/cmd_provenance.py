"""Provenance and metrics inside existing commands: ``show``'s block, ``log --metrics``, ``diff --config``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import provenance_view, series
from .output import Output


def print_provenance(out: Output, metadata: Mapping[str, Any]) -> None:
    """The readable ``Provenance:`` block of ``coral show`` (nothing for commits that record none)."""
    lines = provenance_view.provenance_lines(metadata)
    if not lines:
        return
    out.line()
    out.line("Provenance:")
    for line in lines:
        out.line("    " + line)


def metric_sparklines(metadatas: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per metric over the given commits (oldest first): values, first, last, min, max and the sparkline."""
    rows = []
    for name in series.metric_names(metadatas):
        values = [v for m in metadatas if (v := series.metric_value(m, name)) is not None]
        if values:
            rows.append({"metric": name, "values": values, "first": values[0], "last": values[-1],
                         "min": min(values), "max": max(values), "sparkline": series.sparkline(values)})
    return rows


def print_log_metrics(out: Output, metadatas_newest_first: list[Mapping[str, Any]]) -> None:
    """``coral log --metrics``: one sparkline per metric over the commits shown, oldest on the left."""
    rows = metric_sparklines(list(reversed(metadatas_newest_first)))
    out.line()
    if not rows:
        out.line("No metrics recorded in these commits.")
        return
    width = max(len(r["metric"]) for r in rows)
    fmt = series.format_value
    for r in rows:
        out.line(f"{r['metric'].ljust(width)}  {r['sparkline']}  {fmt(r['first'])} -> {fmt(r['last'])}"
                 f"  (min {fmt(r['min'])}, max {fmt(r['max'])}, {len(r['values'])} points)")


def print_config_diff(out: Output, diff: Mapping[str, Any]) -> None:
    """``coral diff --config``: the hyperparameters and environment that changed, after the weight diff."""
    out.line()
    if not any(diff["recorded"]):
        out.line("Config: neither commit records provenance (written before it existed, or with it off).")
        return
    if diff["identical"]:
        out.line("Config: hyperparameters and environment identical.")
        return
    out.line("Config (hyperparameters and environment):")
    show = provenance_view.show_value
    table = out.table("key", "a", "b")
    for key, (a, b) in diff["changed"].items():
        table.add_row(key, show(a), show(b))
    for key, b in diff["added"].items():
        table.add_row(key, "(absent)", show(b))
    for key, a in diff["removed"].items():
        table.add_row(key, show(a), "(absent)")
    out.print_table(table)
    out.line(f"{len(diff['changed'])} changed, {len(diff['added'])} added, {len(diff['removed'])} removed")
