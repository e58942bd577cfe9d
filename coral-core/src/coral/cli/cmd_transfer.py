"""Commands that move weights in and out: ``export`` and ``import``."""

from __future__ import annotations

import argparse

from ..errors import NothingChangedError
from ..interchange import export_commit_report, import_file
from ..version_control.repository import Repository
from .output import Output, human_bytes, short

#: Checkpoint state that ``--weights-only`` leaves out (optimizer, scheduler, RNG, data pipeline).
STATE_PREFIXES = ("optim", "sched", "rng", "data")


def run_export(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    cid = repo.resolve(args.ref)
    tree = repo.get_commit(cid).tree
    names = sorted(n for n in tree if not (args.weights_only and n.split("/", 1)[0] in STATE_PREFIXES))
    with out.progress(f"Exporting {short(cid)}") as update:
        report = export_commit_report(repo, cid, args.out, args.format, names=names, progress=update)
    if out.json_mode:
        out.json(
            {
                "path": report.path,
                "commit": cid,
                "format": args.format,
                "num_tensors": len(report.names),
                "nbytes": report.nbytes,
                "left_out": report.left_out,
            }
        )
        return 0
    line = (
        f"Exported {len(report.names)} tensors ({human_bytes(report.nbytes)}) of {short(cid)} "
        f"to {report.path} ({args.format})"
    )
    if report.left_out:
        roots = sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in report.left_out})
        shown = ", ".join(roots[:5]) + (", ..." if len(roots) > 5 else "")
        line += f"; left out {len(report.left_out)} tensors the {args.format} format does not hold ({shown})"
    out.line(line)
    return 0


def run_import(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    nothing: str | None = None
    with out.progress(f"Importing {args.file}") as update:
        try:
            cid = import_file(repo, args.file, args.message, progress=update, allow_empty=args.allow_empty)
        except NothingChangedError as exc:  # like `git commit` with nothing to commit: say so, exit 1
            nothing = str(exc)
    if nothing is not None:
        if out.json_mode:
            out.json({"commit": None, "nothing_changed": True, "message": nothing})
        else:
            out.line(nothing)
        return 1
    commit = repo.get_commit(cid)
    nbytes = sum(e.nbytes for e in commit.tree.values())
    if out.json_mode:
        out.json(
            {"commit": cid, "branch": repo.current_branch, "num_tensors": len(commit.tree), "nbytes": nbytes}
        )
        return 0
    where = f"on {repo.current_branch}" if repo.current_branch else "(detached HEAD)"
    out.line(
        f"Imported {len(commit.tree)} tensors ({human_bytes(nbytes)}) from {args.file} as {short(cid)} {where}"
    )
    return 0
