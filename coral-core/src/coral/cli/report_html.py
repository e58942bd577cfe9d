"""One self-contained HTML page of a repository: branch graph, metric curves per branch, storage per commit.

Everything is inline (CSS and SVG, no script, no font or image fetched), so the file opens anywhere offline.
Elements carry classes (``curve``, ``best``, ``commit``, ``edge``, ``bar``) so tests and tools can count them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import ObjectNotFoundError
from ..objects.tensors import chunk_key
from ..version_control.repository import Repository
from . import history, provenance_view, series
from .output import human_bytes

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px} .charts{display:flex;flex-wrap:wrap;gap:16px}
svg text{font-size:11px;fill:#444} .axis{stroke:#999;stroke-width:1} .grid{stroke:#eee;stroke-width:1}
.curve{fill:none;stroke-width:2} .point{stroke:none} .pruned{fill:#fff;stroke-width:1.5}
.best{fill:none;stroke-width:2.5} .edge{stroke:#888;stroke-width:1.5} .commit{stroke:#fff;stroke-width:1.5}
.bar{fill:#4c78a8} table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
pre{white-space:pre-wrap;margin:0} .note{color:#666;font-size:12px;margin:4px 0 8px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


@dataclass
class ReportData:
    """What the page shows, gathered from the repository."""

    title: str
    branches: list[str]
    metrics: dict[str, dict[str, list[series.Point]]]
    order: list[str]
    infos: dict[str, Any]
    decorations: dict[str, list[str]]
    new_bytes: dict[str, int] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)


def gather(repo: Repository, branches: list[str] | None = None, metrics: list[str] | None = None) -> ReportData:
    """Read branches, every commit, the metrics per branch and the bytes each commit added."""
    names = branches or repo.list_branches() or ([repo.head_commit()] if repo.head_commit() else [])
    infos = history.collect(repo, history.all_starts(repo))
    order = history.topo_order(infos)
    metas = [infos[c].metadata for c in reversed(order)]
    wanted = metrics or series.metric_names(metas)
    per = {m: {b: series.series(repo, b, m) for b in names} for m in wanted}
    title = str(repo.path) if repo.path else repo.store.describe()
    chains = {b: series.branch_commits(repo, b)[::-1] for b in names}
    decor = history.decorations(repo)
    return ReportData(title, names, per, order, infos, decor, added_bytes(repo, infos, order), chains)


def added_bytes(repo: Repository, infos: dict[str, Any], order: list[str]) -> dict[str, int]:
    """Stored bytes each commit added (a chunk counts for the oldest commit holding it), like ``coral du``."""
    seen: set[str] = set()
    sizes: dict[str, int] = {}
    out: dict[str, int] = {}
    for cid in reversed(order):
        chunks: set[str] = set()
        if not infos[cid].pruned:
            for entry in repo.get_commit(cid).tree.values():
                chunks.update(entry.chunks)
        new = chunks - seen
        seen |= chunks
        total = 0
        for c in new:
            if c not in sizes:
                try:
                    sizes[c] = repo.store.size(chunk_key(c))
                except ObjectNotFoundError:
                    sizes[c] = 0
            total += sizes[c]
        out[cid] = total
    return out


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def metric_svg(metric: str, per_branch: dict[str, list[series.Point]], colors: dict[str, str]) -> str:
    """One chart: a polyline per branch with points (hollow when pruned) and the best checkpoint circled."""
    w, h, left, right, top, bottom = 460, 260, 56, 14, 24, 34
    pts = [p for points in per_branch.values() for p in points]
    parts = [f'<svg class="chart" data-metric="{_esc(metric)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<text x="{left}" y="15" style="font-size:13px;font-weight:600">{_esc(metric)}</text>']
    if not pts:
        parts.append(f'<text x="{left}" y="{h // 2}">no values recorded</text></svg>')
        return "".join(parts)
    x0, x1 = min(p.step for p in pts), max(p.step for p in pts)
    y0, y1 = min(p.value for p in pts), max(p.value for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pw, ph = w - left - right, h - top - bottom

    def sx(step: float) -> float:
        return left + (0.5 if x1 == x0 else (step - x0) / (x1 - x0)) * pw

    def sy(value: float) -> float:
        return top + (y1 - value) / (y1 - y0) * ph

    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        y = sy(v)
        parts.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(series.format_value(v))}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}"/>')
    parts.append(f'<text x="{left}" y="{h - 8}">step {x0}</text>')
    parts.append(f'<text x="{w - right}" y="{h - 8}" text-anchor="end">{x1}</text>')
    for branch, points in per_branch.items():
        if not points:
            continue
        color = colors[branch]
        coords = " ".join(f"{sx(p.step):.1f},{sy(p.value):.1f}" for p in points)
        parts.append(f'<polyline class="curve" data-branch="{_esc(branch)}" stroke="{color}" points="{coords}"/>')
        for p in points:
            cls = "point pruned" if p.pruned else "point"
            fill = f'stroke="{color}"' if p.pruned else f'fill="{color}"'
            parts.append(f'<circle class="{cls}" cx="{sx(p.step):.1f}" cy="{sy(p.value):.1f}" r="3" {fill}>'
                         f'<title>{_esc(branch)} step {p.step}: {_esc(series.format_value(p.value))} '
                         f'({p.commit[:8]}{", pruned" if p.pruned else ""})</title></circle>')
        best = series.best_point(points, metric)
        if best is not None:
            parts.append(f'<circle class="best" cx="{sx(best.step):.1f}" cy="{sy(best.value):.1f}" r="7" '
                         f'stroke="{color}"><title>best on {_esc(branch)}: '
                         f'{_esc(series.format_value(best.value))} at step {best.step}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def graph_svg(data: ReportData, colors: dict[str, str]) -> str:
    """The commit graph: lanes like ``coral log --graph``, a dot per commit, a line per parent link."""
    rows = [(g, c) for g, c in history.graph_rows(data.order, {c: data.infos[c].parents for c in data.order})
            if c is not None]
    lane = {cid: g.index("*") // 2 for g, cid in rows}
    row_h, lane_w, left = 22, 18, 16
    lanes = max(lane.values(), default=0) + 1
    text_x = left + lanes * lane_w + 8
    w, h = max(640, text_x + 560), max(row_h * len(rows) + 10, 30)
    y = {cid: 14 + i * row_h for i, (_, cid) in enumerate(rows)}
    x = {cid: left + lane[cid] * lane_w for cid in lane}
    tip_color = {}
    for branch in data.branches:
        for cid in data.chains.get(branch, []):
            tip_color.setdefault(cid, colors.get(branch, "#555"))
    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    for cid in y:
        for p in data.infos[cid].parents:
            if p in y:
                parts.append(f'<line class="edge" x1="{x[cid]}" y1="{y[cid]}" x2="{x[p]}" y2="{y[p]}"/>')
    for cid in y:
        info = data.infos[cid]
        refs = data.decorations.get(cid, [])
        metrics = " ".join(f"{k}={v}" for k, v in history.key_metrics(info.metadata, 3))
        decorated = f"({', '.join(refs)}) " if refs else ""
        label = f"{cid[:8]} {decorated}{(info.message or '').splitlines()[0][:60]}"
        parts.append(f'<circle class="commit" cx="{x[cid]}" cy="{y[cid]}" r="5" '
                     f'fill="{tip_color.get(cid, "#555")}"><title>{_esc(cid)}</title></circle>')
        pruned = '<tspan fill="#c33" dx="8">[pruned]</tspan>' if info.pruned else ""
        parts.append(f'<text x="{text_x}" y="{y[cid] + 4}">{_esc(label)}'
                     f'<tspan fill="#2a7" dx="8">{_esc(metrics)}</tspan>{pruned}</text>')
    parts.append("</svg>")
    return "".join(parts)


def storage_svg(data: ReportData) -> str:
    """One bar per commit (oldest left): the stored bytes it added."""
    commits = list(reversed(data.order))
    w, h, left, bottom = 640, 200, 64, 24
    bar_w = max(2.0, min(28.0, (w - left - 10) / max(len(commits), 1) - 2))
    top_val = max([data.new_bytes.get(c, 0) for c in commits] + [1])
    parts = [f'<svg class="storage" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
             f'<line class="axis" x1="{left}" x2="{w - 6}" y1="{h - bottom}" y2="{h - bottom}"/>',
             f'<text x="{left - 6}" y="14" text-anchor="end">{_esc(human_bytes(top_val))}</text>',
             f'<text x="{left - 6}" y="{h - bottom}" text-anchor="end">0</text>']
    for i, cid in enumerate(commits):
        added = data.new_bytes.get(cid, 0)
        bh = (h - bottom - 10) * added / top_val
        bx = left + 4 + i * (bar_w + 2)
        parts.append(f'<rect class="bar" x="{bx:.1f}" y="{h - bottom - bh:.1f}" width="{bar_w:.1f}" '
                     f'height="{max(bh, 0.5):.1f}"><title>{cid[:8]}: +{_esc(human_bytes(added))}'
                     f'{" (pruned)" if data.infos[cid].pruned else ""}</title></rect>')
    parts.append(f'<text x="{left}" y="{h - 6}">oldest</text>')
    parts.append(f'<text x="{w - 6}" y="{h - 6}" text-anchor="end">newest</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(data: ReportData) -> str:
    """The whole page as one string."""
    colors = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(data.branches)}
    legend = "".join(f'<span><i class="swatch" style="background:{c}"></i>{_esc(b)}</span>' for b, c in colors.items())
    charts = "".join(metric_svg(m, per, colors) for m, per in data.metrics.items()) or "<p>No metrics recorded.</p>"
    total = sum(data.new_bytes.values())
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    prov_rows = ""
    for branch in data.branches:
        chain = data.chains.get(branch, [])
        lines = provenance_view.provenance_lines(data.infos[chain[0]].metadata) if chain else []
        if lines:
            prov_rows += f"<tr><th>{_esc(branch)}</th><td><pre>{_esc(chr(10).join(lines))}</pre></td></tr>"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Coral report: {_esc(data.title)}</title><style>{CSS}</style></head><body>"
        f"<h1>Coral report</h1><div class=\"meta\">{_esc(data.title)} &middot; {len(data.order)} commits &middot; "
        f"{len(data.branches)} branches &middot; {_esc(human_bytes(total))} stored &middot; generated {generated}</div>"
        f"<h2>Metrics per branch</h2><div class=\"legend\">{legend}</div>"
        "<div class=\"note\">filled dot: checkpoint; hollow dot: pruned checkpoint (its metrics are kept); "
        "ring: the branch's best checkpoint</div>"
        f"<div class=\"charts\">{charts}</div>"
        f"<h2>Branch graph</h2>{graph_svg(data, colors)}"
        f"<h2>Storage added per commit</h2>{storage_svg(data)}"
        + (f"<h2>Provenance (newest commit per branch)</h2><table>{prov_rows}</table>" if prov_rows else "")
        + "</body></html>\n"
    )
