"""Commands that move weights in and out: ``export`` and ``import``."""

from __future__ import annotations

import argparse

from ..interchange import export_commit, import_file
from ..version_control.repository import Repository
from .output import Output, human_bytes, short

#: Checkpoint state that ``--weights-only`` leaves out (optimizer, scheduler, RNG, data pipeline).
STATE_PREFIXES = ("optim", "sched", "rng", "data")


def run_export(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    cid = repo.resolve(args.ref)
    tree = repo.get_commit(cid).tree
    names = sorted(n for n in tree if not (args.weights_only and n.split("/", 1)[0] in STATE_PREFIXES))
    with out.progress(f"Exporting {short(cid)}") as update:
        path = export_commit(repo, cid, args.out, args.format, names=names, progress=update)
    nbytes = sum(tree[n].nbytes for n in names)
    if out.json_mode:
        out.json(
            {"path": path, "commit": cid, "format": args.format, "num_tensors": len(names), "nbytes": nbytes}
        )
        return 0
    out.line(
        f"Exported {len(names)} tensors ({human_bytes(nbytes)}) of {short(cid)} to {path} ({args.format})"
    )
    return 0


def run_import(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.progress(f"Importing {args.file}") as update:
        cid = import_file(repo, args.file, args.message, progress=update)
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
