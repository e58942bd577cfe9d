"""``coral plot METRIC [METRIC ...] [--branch B ...] [-o curve.png]``: metrics over steps, one line per branch."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import InvalidArgumentError, MissingExtraError
from ..version_control.repository import Repository
from . import series
from .output import Output

MARKERS = "•+x#o%@&"
MISSING_EXTRA = "coral plot -o needs matplotlib: pip install 'coral-core[plot]'"


def add_parser(sub: Any) -> None:
    """Register ``coral plot`` on the subcommand parser."""
    p = sub.add_parser("plot", help="draw metrics over steps per branch (terminal chart, or -o PNG/SVG/PDF)")
    p.add_argument("metrics", nargs="+", metavar="METRIC", help="metric names (loss, accuracy, ...)")
    p.add_argument("--branch", action="extend", nargs="+", metavar="B", help="branches to draw (default HEAD)")
    p.add_argument("-o", "--output", metavar="FILE", help="write an image with matplotlib ('coral-core[plot]')")
    p.add_argument("--size", default="800x500", metavar="WxH", help="image size in pixels (default 800x500)")
    p.add_argument("--width", type=int, default=64, help="terminal chart width in columns (default 64)")
    p.add_argument("--height", type=int, default=12, help="terminal chart height in rows (default 12)")
    p.add_argument("--json", action="store_true", help="the points as JSON instead of a chart")


def parse_size(text: str) -> tuple[int, int]:
    """``"800x500"`` -> ``(800, 500)``; one clear error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or not (16 <= int(m[1]) <= 10000 and 16 <= int(m[2]) <= 10000):
        raise InvalidArgumentError("--size", text, "expected WIDTHxHEIGHT in pixels, e.g. 800x500 (16..10000)")
    return int(m[1]), int(m[2])


def collect(repo: Repository, metrics: list[str], branches: list[str]) -> dict[str, dict[str, list[series.Point]]]:
    """``{metric: {branch: points}}``; a branch without the metric has an empty list."""
    return {m: {b: series.series(repo, b, m) for b in branches} for m in metrics}


def run_plot(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    branches = list(dict.fromkeys(args.branch or [repo.current_branch or "HEAD"]))
    for b in branches:
        repo.resolve(b)  # an unknown branch is one clear error before anything is drawn
    if args.output:
        size = parse_size(args.size)
    if args.width < 16 or args.height < 4:
        raise InvalidArgumentError("--width/--height", f"{args.width}x{args.height}", "need at least 16x4")
    data = collect(repo, args.metrics, branches)
    if out.json_mode:
        out.json({m: {b: [p.__dict__ for p in pts] for b, pts in per.items()} for m, per in data.items()})
        return 0
    if args.output:
        path = write_image(data, args.output, size)
        out.line(f"wrote {path} ({size[0]}x{size[1]}, {', '.join(args.metrics)} on {', '.join(branches)})")
        return 0
    for metric, per in data.items():
        for line in terminal_chart(metric, per, args.width, args.height):
            out.line(line)
        out.line()
    return 0


def terminal_chart(metric: str, per_branch: dict[str, list[series.Point]], width: int, height: int) -> list[str]:
    """A compact character chart: one marker per branch, ``*`` on each branch's best checkpoint."""
    pts = [p for points in per_branch.values() for p in points]
    if not pts:
        return [f"{metric}: no values recorded on {', '.join(per_branch)}"]
    x0, x1 = min(p.step for p in pts), max(p.step for p in pts)
    y0, y1 = min(p.value for p in pts), max(p.value for p in pts)
    grid = [[" "] * width for _ in range(height)]

    def cell(p: series.Point) -> tuple[int, int]:
        col = 0 if x1 == x0 else round((p.step - x0) / (x1 - x0) * (width - 1))
        row = height // 2 if y1 == y0 else round((y1 - p.value) / (y1 - y0) * (height - 1))
        return row, col

    legend = []
    for i, (branch, points) in enumerate(per_branch.items()):
        mark = MARKERS[i % len(MARKERS)]
        for p in points:
            r, c = cell(p)
            grid[r][c] = mark
        best = series.best_point(points, metric)
        if best is not None:
            r, c = cell(best)
            grid[r][c] = "*"
            legend.append(f"{mark} {branch} (best {series.format_value(best.value)} @ step {best.step}, "
                          f"{len(points)} points)")
        else:
            legend.append(f"{mark} {branch} (no values)")
    hi, lo = series.format_value(y1), series.format_value(y0)
    pad = max(len(hi), len(lo))
    lines = [f"{metric}"]
    for r, row in enumerate(grid):
        label = hi if r == 0 else lo if r == height - 1 else ""
        lines.append(f"{label.rjust(pad)} |{''.join(row).rstrip()}")
    lines.append(" " * pad + " +" + "-" * width)
    left, right = f"step {x0}", str(x1)
    lines.append(" " * (pad + 2) + left + right.rjust(max(width - len(left), len(right) + 1)))
    lines.extend("  " + entry for entry in legend)
    return lines


def write_image(data: dict[str, dict[str, list[series.Point]]], path: str, size: tuple[int, int]) -> str:
    """Draw every metric (one panel each, one line per branch, the best checkpoint circled) with matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError(MISSING_EXTRA) from None
    width, height = size
    dpi = 100
    fig, axes = plt.subplots(len(data), 1, figsize=(width / dpi, height / dpi), dpi=dpi, squeeze=False)
    try:
        for ax, (metric, per) in zip(axes[:, 0], data.items(), strict=True):
            for branch, points in per.items():
                if not points:
                    continue
                line, = ax.plot([p.step for p in points], [p.value for p in points], marker=".", label=branch)
                pruned = [p for p in points if p.pruned]
                if pruned:
                    ax.plot([p.step for p in pruned], [p.value for p in pruned], "x", color=line.get_color())
                best = series.best_point(points, metric)
                if best is not None:
                    ax.plot([best.step], [best.value], "o", markersize=10, markerfacecolor="none",
                            markeredgecolor=line.get_color(), markeredgewidth=2)
                    ax.annotate(f"best {series.format_value(best.value)}", (best.step, best.value),
                                textcoords="offset points", xytext=(6, 6), fontsize=8)
            ax.set_ylabel(metric)
            ax.margins(x=0.08, y=0.15)  # room for the best-checkpoint label
            ax.grid(True, alpha=0.3)
            if any(per.values()):
                ax.legend(fontsize=8)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path
