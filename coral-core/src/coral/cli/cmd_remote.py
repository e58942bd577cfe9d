"""Commands that talk to other repositories: ``remote``, ``fetch``, ``push``, ``pull``, ``clone`` and the
remote side of ``fsck`` (``--remote NAME`` checks a remote, ``--repair NAME`` heals local damage from one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidArgumentError
from ..version_control import remotes
from ..version_control.repository import Repository
from .output import Output, human_bytes, short


def add_parsers(sub: argparse._SubParsersAction, json_flag) -> None:  # type: ignore[type-arg]
    """Add the remote commands to the ``coral`` parser."""
    p = sub.add_parser("remote", help="list, add NAME URL, or remove NAME remotes")
    p.add_argument("action", nargs="?", choices=["add", "remove", "list"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("url", nargs="?", help="a repository folder or store URL (s3://bucket/prefix, file://...)")
    json_flag(p)

    p = sub.add_parser("fetch", help="download a remote's branches (as origin/main), commits and chunks")
    p.add_argument("remote", nargs="?", default="origin")
    json_flag(p)

    p = sub.add_parser("push", help="send a branch to a remote (refused if the remote moved, unless --force)")
    p.add_argument("remote", nargs="?", default="origin")
    p.add_argument("branch", nargs="?", help="default: the current branch")
    p.add_argument("-f", "--force", action="store_true", help="replace the remote branch even if it moved")
    json_flag(p)

    p = sub.add_parser("pull", help="fetch, then fast-forward the current branch (diverged: refused)")
    p.add_argument("remote", nargs="?", default="origin")
    p.add_argument("branch", nargs="?", help="default: the current branch")
    json_flag(p)

    p = sub.add_parser("clone", help="copy a repository from URL into PATH (remote 'origin')")
    p.add_argument("url")
    p.add_argument("path")
    p.add_argument("-b", "--branch", help="branch to check out (default: the remote's)")
    p.add_argument("--depth", type=_positive, metavar="N", help="weights of only the newest N checkpoints")
    json_flag(p)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run_remote(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    if args.action == "add":
        if not args.name or not args.url:
            raise InvalidArgumentError("url", args.url, "usage: coral remote add NAME URL")
        url = repo.add_remote(args.name, args.url)
        out.json({"name": args.name, "url": url}) if out.json_mode else out.line(f"Added remote {args.name} {url}")
        return 0
    if args.action == "remove":
        if not args.name:
            raise InvalidArgumentError("name", None, "usage: coral remote remove NAME")
        repo.remove_remote(args.name)
        out.json({"removed": args.name}) if out.json_mode else out.line(f"Removed remote {args.name}")
        return 0
    found = repo.list_remotes()
    if out.json_mode:
        out.json([{"name": n, "url": u} for n, u in found.items()])
    else:
        for name, url in found.items():
            out.line(f"{name}\t{url}")
    return 0


def _report(out: Output, verb: str, result: remotes.SyncResult) -> None:
    if out.json_mode:
        out.json(result.to_dict())
        return
    for ref, (old, new) in result.refs.items():
        out.line(f"{short(old) if old else '(new)'}..{short(new)}  {ref}")
    sent = f"{result.objects} objects, {human_bytes(result.bytes)}"
    if result.up_to_date:
        out.line(f"{verb} {result.remote}: up to date ({sent}; {result.skipped} already there)")
    else:
        out.line(f"{verb} {result.remote}: {result.commits} commits, {sent} ({result.skipped} already there)")


def run_fetch(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.progress(f"Fetching {args.remote}") as update:
        result = repo.fetch(args.remote, progress=update)
    _report(out, "Fetched", result)
    return 0


def run_push(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.progress(f"Pushing to {args.remote}") as update:
        result = repo.push(args.remote, args.branch, force=args.force, progress=update)
    _report(out, "Pushed to", result)
    return 0


def run_pull(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    with out.progress(f"Pulling {args.remote}") as update:
        result = repo.pull(args.remote, args.branch, progress=update)
    _report(out, "Pulled", result)
    return 0


def run_clone(args: argparse.Namespace, out: Output, cwd: Path) -> int:
    target = Path(args.path).expanduser()
    target = target if target.is_absolute() else cwd / target
    url = args.url if "://" in args.url or Path(args.url).is_absolute() else str(cwd / args.url)
    with out.progress(f"Cloning {args.url}") as update:
        repo = Repository.clone(url, target, branch=args.branch, depth=args.depth, progress=update)
    with repo:
        head = repo.head_commit()
        info = {"path": str(repo.path), "branch": repo.current_branch, "commit": head, "commits": len(repo.log())}
    if out.json_mode:
        out.json(info)
    else:
        out.line(f"Cloned {args.url} into {info['path']} ({info['commits']} commits, on {info['branch']}"
                 + (f" at {short(head)})" if head else ")"))
    return 0


def run_fsck_remote(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    """``fsck --remote NAME`` (verify the remote) or ``fsck --repair NAME`` (heal local damage from it)."""
    if args.repair:
        with out.status(f"Repairing from {args.repair}..."):
            result = remotes.repair(repo, args.repair)
        if out.json_mode:
            out.json(result)
        else:
            for oid in result["repaired"]:
                out.line(f"repaired: {oid}")
            for problem in result["unrepaired"]:
                out.line(f"damaged: {problem}")
            if result["ok"]:
                out.line(f"ok: {len(result['repaired'])} objects replaced with good copies from {args.repair}")
        if not result["ok"]:
            out.err.print(f"error: {len(result['unrepaired'])} problem(s) remain after repair", soft_wrap=True,
                          markup=False)
            return 1
        return 0
    with out.status(f"Verifying remote {args.remote}..."):
        result = remotes.fsck_remote(repo, args.remote)
    if out.json_mode:
        out.json(result)
    else:
        for problem in result["errors"]:
            out.line(f"damaged: {problem}")
        if result["ok"]:
            out.line(
                f"ok: remote {args.remote}: {result['commits']} commits, {result['chunks_checked']} chunks verified"
            )
    if not result["ok"]:
        out.err.print(f"error: remote {args.remote} is damaged: {len(result['errors'])} problem(s) found",
                      soft_wrap=True, markup=False)
        return 1
    return 0


def run_remote_branches(repo: Repository, args: argparse.Namespace, out: Output) -> int:
    """``coral branch -r``: the remote-tracking branches."""
    rows = [{"name": name, "commit": target} for name, target in sorted(remotes.tracking_refs(repo).items())]
    if out.json_mode:
        out.json(rows)
        return 0
    for row in rows:
        message = repo.get_commit(row["commit"]).message.splitlines()
        out.line(f"  {row['name']}  {short(row['commit'])} {message[0] if message else ''}")
    return 0


COMMANDS = {"remote": run_remote, "fetch": run_fetch, "push": run_push, "pull": run_pull}
