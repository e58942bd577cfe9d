"""``coral report -o report.html``: one self-contained page (graph, curves, storage) to open or send."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..store.atomicfile import atomic_write
from ..version_control.repository import Repository
from . import report_html
from .output import Output, human_bytes


def add_parser(sub: Any) -> None:
    """Register ``coral report`` on the subcommand parser."""
    p = sub.add_parser("report", help="write one self-contained HTML page: branch graph, metric curves, storage")
    p.add_argument("-o", "--output", default="coral-report.html", metavar="FILE", help="default coral-report.html")
    p.add_argument("--branch", action="extend", nargs="+", metavar="B", help="branches to draw (default all)")
    p.add_argument("--metric", action="extend", nargs="+", metavar="M", help="metrics to draw (default all)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_report(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    path = Path(args.output)
    if not path.parent.is_dir():
        raise InvalidArgumentError("-o", args.output, f"folder {str(path.parent)!r} does not exist")
    data = report_html.gather(repo, args.branch, args.metric)
    page = report_html.render(data)
    atomic_write(path, page)  # a reader never sees half a page; a normal file's mode under the umask
    summary: dict[str, Any] = {"path": str(path), "bytes": len(page.encode()), "commits": len(data.order),
               "branches": data.branches, "metrics": list(data.metrics)}
    if out.json_mode:
        out.json(summary)
    else:
        out.line(f"wrote {path} ({human_bytes(summary['bytes'])}: {len(data.order)} commits, "
                 f"{len(data.branches)} branches, {len(data.metrics)} metrics)")
    return 0
