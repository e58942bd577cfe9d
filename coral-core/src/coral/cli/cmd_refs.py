"""Commands that read or move refs: ``branch``, ``checkout``, ``tag``, ``merge``."""

from __future__ import annotations

import argparse
import logging
import re
from typing import Any

from ..errors import InvalidArgumentError
from ..version_control.repository import Repository
from . import cmd_remote
from .output import Output, human_time, iso_time, short

log = logging.getLogger("coral.cli")


def run_branch(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "remotes", False):
        return cmd_remote.run_remote_branches(repo, args, out)
    doomed = args.delete or getattr(args, "force_delete", None)
    if doomed:
        repo.delete_branch(doomed, force=bool(getattr(args, "force_delete", None)))
        out.line(f"Deleted branch {doomed}")
        return 0
    if args.name and args.force:
        if args.start is None:
            raise InvalidArgumentError("start", None, "branch --force NAME COMMIT needs the COMMIT to move NAME to")
        target = repo.reset_branch(args.name, args.start)
        out.line(f"Branch {args.name} now at {short(target)}")
        return 0
    if args.force:
        raise InvalidArgumentError("--force", True, "use: coral branch --force NAME COMMIT")
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
    left = repo.head_commit() if repo.current_branch is None else None
    target = repo.switch(args.ref)
    if left and left != target and not _on_a_ref(repo, left):
        log.warning(
            "leaving commit %s behind, not on any branch or tag (a commit made on a detached HEAD); "
            "keep it with `coral branch NAME %s`", short(left), short(left),
        )
    if repo.current_branch is not None:
        verb = "Switched to a new branch" if args.create else "Switched to branch"
        out.line(f"{verb} '{repo.current_branch}'" + (f" at {short(target)}" if target else ""))
    else:
        out.line(f"HEAD is now at {short(target)} (detached)")
    return 0


def _on_a_ref(repo: Repository, commit: str) -> bool:
    """Whether ``commit`` is reachable from some branch or tag (else leaving a detached HEAD loses it)."""
    targets = set(repo.store.list_refs("heads/").values()) | {t["commit"] for t in repo.list_tags()}
    return commit in targets or any(repo.merge_base(t, commit) == commit for t in targets)


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
    per_tensor = _per_tensor(args.per_tensor or [])
    on_conflict = "ours" if args.ours else "theirs" if args.theirs else None
    before = repo.head_commit()
    commit = repo.merge(
        args.ref, args.strategy, weights, args.message, on_conflict=on_conflict,
        density=args.density, seed=args.seed, t=args.t, per_tensor=per_tensor,
    )
    if commit == before:
        out.line(f"Already up to date: {args.ref} is already merged into {repo.current_branch or 'HEAD'}")
        return 0
    out.line(f"Merged {args.ref} into {repo.current_branch or 'HEAD'} ({args.strategy}): {short(commit)}")
    record = repo.get_commit(commit).metadata.get("merge", {})
    if args.seed is None and record.get("seed") is not None:
        out.line(f"seed {record['seed']} (pass --seed {record['seed']} to repeat this merge exactly)")
    by_side: dict[str, list[str]] = {}
    for name, side in (record.get("non_float_from") or {}).items():
        by_side.setdefault(side, []).append(name)
    for side, names in sorted(by_side.items()):
        out.line(f"integer/bool tensors taken from {side}: {', '.join(names)}")
    return 0  # on a detached HEAD, Repository.merge has logged the warning (stderr)


def _per_tensor(items: list[str]) -> dict[str, str]:
    """``["embed*=ours", "*=ties"]`` -> ``{"embed*": "ours", "*": "ties"}`` (in order: first match wins)."""
    mapping: dict[str, str] = {}
    for item in items:
        pattern, sep, choice = item.rpartition("=")
        if not sep or not pattern or not choice:
            raise InvalidArgumentError("--per-tensor", item, "expected GLOB=STRATEGY, GLOB=ours or GLOB=theirs")
        if pattern in mapping:
            raise InvalidArgumentError("--per-tensor", item, f"pattern {pattern!r} is given twice")
        mapping[pattern] = choice
    return mapping


def run_reflog(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    """One line per update of REF, newest first: ``REF@{N}``, the value it got, when, and why."""
    entries = repo.reflog(args.ref)
    if out.json_mode:
        out.json([{**e, "selector": f"{args.ref}@{{{i}}}", "iso_time": iso_time(e["time"])} for i, e in
                  enumerate(entries)])
        return 0
    if not entries:
        out.line(f"No reflog entries for {args.ref}")
        return 0
    for i, e in enumerate(entries):
        value = e["commit"] if e["ref"] == "HEAD" else e["new"]
        shown = short(value) if value else "(deleted)"
        out.line(f"{shown} {args.ref}@{{{i}}} {human_time(e['time'])}: {e['reason']}")
    return 0
