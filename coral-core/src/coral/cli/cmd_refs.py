"""Commands that read or move refs: ``branch``, ``checkout``, ``tag``, ``merge``."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import InvalidArgumentError
from ..version_control.repository import Repository
from . import cmd_remote
from .output import Output, human_time, iso_time, short


def run_branch(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "remotes", False):
        return cmd_remote.run_remote_branches(repo, args, out)
    if args.delete:
        repo.delete_branch(args.delete)
        out.line(f"Deleted branch {args.delete}")
        return 0
    if args.name:
        target = repo.create_branch(args.name, args.start)
        out.line(f"Created branch {args.name} at {short(target)}")
        return 0
    current = repo.current_branch
    rows = []
    for name, target in sorted((r[len("heads/") :], t) for r, t in repo.store.list_refs("heads/").items()):
        rows.append({"name": name, "commit": target, "current": name == current})
    if out.json_mode:
        out.json(rows)
        return 0
    for row in rows:
        message = repo.get_commit(row["commit"]).message.splitlines()
        out.line(
            f"{'*' if row['current'] else ' '} {row['name']}  {short(row['commit'])} {message[0] if message else ''}"
        )
    if not rows:
        out.line(f"No branches yet (HEAD is on {current or 'a detached commit'} with no commits)")
    return 0


def run_checkout(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if args.create:
        repo.create_branch(args.ref, args.start)
    elif args.start is not None:
        raise InvalidArgumentError("start", args.start, "a start point needs -b NEW_BRANCH")
    target = repo.switch(args.ref)
    if repo.current_branch is not None:
        verb = "Switched to a new branch" if args.create else "Switched to branch"
        out.line(f"{verb} '{repo.current_branch}'" + (f" at {short(target)}" if target else ""))
    else:
        out.line(f"HEAD is now at {short(target)} (detached)")
    return 0


def run_tag(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if args.delete:
        repo.delete_tag(args.delete)
        out.line(f"Deleted tag {args.delete}")
        return 0
    if args.name:
        target = repo.tag_version(args.name, args.message, args.commit)
        out.line(f"Tagged {short(target)} as {args.name}")
        return 0
    tags = repo.list_tags()
    if args.releases:
        tags = sorted((t for t in tags if _is_release(t)), key=_version_key)
    else:
        tags = sorted(tags, key=lambda t: t["name"])
    rows = [
        {
            "name": t["name"],
            "commit": t["commit"],
            "description": t.get("description"),
            "time": iso_time(t.get("time")),
            "timestamp": t.get("time"),
            "release": _is_release(t),
            "version": (t.get("metadata") or {}).get("version"),
            "metadata": t.get("metadata") or {},
            "model_card": t.get("model_card"),
        }
        for t in tags
    ]
    if out.json_mode:
        out.json(rows)
        return 0
    if not rows:
        out.line("No releases" if args.releases else "No tags")
        return 0
    table = out.table("tag", "commit", "date", "release", "description")
    for r in rows:
        table.add_row(
            r["name"],
            short(r["commit"]),
            human_time(r["timestamp"]) if r["timestamp"] else "",
            str(r["version"] or "yes") if r["release"] else "",
            r["description"] or "",
        )
    out.print_table(table)
    return 0


def _is_release(tag: dict[str, Any]) -> bool:
    return bool((tag.get("metadata") or {}).get("release") is True)


def _version_key(tag: dict[str, Any]) -> list[tuple[int, Any]]:
    version = str((tag.get("metadata") or {}).get("version") or tag["name"].removeprefix("v"))
    core, _, pre = version.partition("-")
    key = [(0, int(x)) if x.isdigit() else (1, x) for x in re.split(r"[.+]", core)]
    # a pre-release sorts before its release (1.0.0-rc1 < 1.0.0)
    return key + ([(0, 0), (1, pre)] if pre else [(1, "~")])


def run_merge(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise InvalidArgumentError(
                "--weights", args.weights, "expected numbers such as 0.3,0.7"
            ) from None
    on_conflict = "ours" if args.ours else "theirs" if args.theirs else None
    commit = repo.merge(args.ref, args.strategy, weights, args.message, on_conflict=on_conflict)
    out.line(f"Merged {args.ref} into {repo.current_branch or 'HEAD'} ({args.strategy}): {short(commit)}")
    return 0
