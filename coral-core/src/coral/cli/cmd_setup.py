"""Commands that need no repository: ``init`` and ``plugins``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import RepositoryNotFoundError
from ..plugins import list_plugins
from ..version_control.repository import CORAL_DIR, Repository
from .output import Output


def run_init(args: argparse.Namespace, out: Output, cwd: Path) -> int:
    path = args.path or ""
    if "://" in path and not path.startswith("file://"):
        return _init_url(path, out)  # s3://bucket/prefix and other store URLs: the repository lives there
    path = path[len("file://") :] if path.startswith("file://") else path
    root = (cwd / path).resolve() if path else cwd
    existed = (root / CORAL_DIR).is_dir()
    with Repository(root, init=True) as repo:
        branch = repo.current_branch
    if out.json_mode:
        out.json({"path": str(root), "created": not existed, "branch": branch})
        return 0
    verb = "Reinitialized existing" if existed else "Initialized empty"
    out.line(f"{verb} Coral repository in {root / CORAL_DIR}")
    return 0


def _init_url(url: str, out: Output) -> int:
    """Create (or reopen) a repository in a store URL instead of a local folder named after the URL."""
    try:
        Repository(url).close()
        existed = True
    except RepositoryNotFoundError:
        existed = False
    with Repository(url, init=True) as repo:
        branch = repo.current_branch
    if out.json_mode:
        out.json({"path": url, "created": not existed, "branch": branch})
        return 0
    out.line(f"{'Reinitialized existing' if existed else 'Initialized empty'} Coral repository in {url}")
    return 0


def run_plugins(args: argparse.Namespace, out: Output) -> int:
    rows: list[dict[str, Any]] = [
        {"name": p.name, "distribution": p.distribution, "module": p.module, "hooks": list(p.hooks)}
        for p in list_plugins()
    ]
    if out.json_mode:
        out.json(rows)
        return 0
    table = out.table("plugin", "distribution", "module", "hooks")
    for r in rows:
        table.add_row(r["name"], r["distribution"] or "-", r["module"], ", ".join(r["hooks"]))
    out.print_table(table)
    return 0
