"""``coral report -o report.html``: one self-contained page (graph, curves, storage) to open or send."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

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
    data = report_html.gather(repo, args.branch, args.metric)
    page = report_html.render(data)
    path = Path(args.output)
    # write beside the target, then rename: a reader never sees half a page
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a normal file, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    summary = {"path": str(path), "bytes": len(page.encode()), "commits": len(data.order),
               "branches": data.branches, "metrics": list(data.metrics)}
    if out.json_mode:
        out.json(summary)
    else:
        out.line(f"wrote {path} ({human_bytes(summary['bytes'])}: {len(data.order)} commits, "
                 f"{len(data.branches)} branches, {len(data.metrics)} metrics)")
    return 0
