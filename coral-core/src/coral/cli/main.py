"""The ``coral`` command: git-like subcommands over a weights repository.

Exit codes: 0 ok, 1 error (one ``error: ...`` line on stderr, no traceback; ``CORAL_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .. import __version__
from ..errors import CoralError
from ..version_control.merge import STRATEGIES
from ..version_control.repository import Repository
from . import (
    cmd_compare,
    cmd_history,
    cmd_plot,
    cmd_refs,
    cmd_remote,
    cmd_report,
    cmd_setup,
    cmd_storage,
    cmd_transfer,
)
from .output import Output

log = logging.getLogger("coral.cli")

Command = Callable[[Repository, argparse.Namespace, Output], int]


class UsageError(CoralError):
    """The command line itself is wrong (unknown option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting 2, so usage errors exit 1 like the rest."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coral", description="Version control and checkpoints for neural-network weights.")
    parser.add_argument("-C", dest="cwd", metavar="PATH", help="run as if coral was started in PATH")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"coral {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("init", help="create a repository (default: the current folder)")
    p.add_argument("path", nargs="?")
    _json_flag(p)

    p = sub.add_parser("status", help="current branch, HEAD commit and counts")
    _json_flag(p)

    p = sub.add_parser("log", help="one line per commit: hash, date, refs, message, metrics, [pruned]")
    p.add_argument("ref", nargs="?", help="start from this ref (default HEAD)")
    p.add_argument("--all", action="store_true", help="every branch and tag")
    p.add_argument("--graph", action="store_true", help="draw the parent graph")
    p.add_argument("-n", "--limit", type=_count, metavar="N", help="show at most N commits")
    p.add_argument("--metrics", action="store_true", help="add a sparkline per metric over the commits shown")
    _json_flag(p)

    p = sub.add_parser("show", help="a commit's tensors (dtype, shape, sizes) and metadata")
    p.add_argument("ref", nargs="?", default="HEAD")
    _json_flag(p)

    p = sub.add_parser("diff", help="which tensors changed between two commits, and by how much")
    p.add_argument("a")
    p.add_argument("b", nargs="?", help="default HEAD")
    p.add_argument("--config", action="store_true", help="also what changed in hyperparameters and environment")
    _json_flag(p)

    p = sub.add_parser("branch", help="list, create (NAME [START]) or delete (-d NAME, -D NAME) branches")
    p.add_argument("name", nargs="?")
    p.add_argument("start", nargs="?", help="commit the new branch starts at (default HEAD)")
    dele = p.add_mutually_exclusive_group()
    dele.add_argument("-d", "--delete", metavar="NAME", help="delete a branch another branch or tag reaches")
    dele.add_argument("-D", dest="force_delete", metavar="NAME", help="delete a branch even if its commits are lost")
    p.add_argument(
        "-f", "--force", action="store_true", help="NAME COMMIT: move (or repair) an existing branch to COMMIT"
    )
    p.add_argument("-r", "--remotes", action="store_true", help="list remote-tracking branches (origin/main)")
    _json_flag(p)

    p = sub.add_parser("checkout", help="switch to a branch, or detach HEAD at a tag or commit")
    p.add_argument("ref")
    p.add_argument("start", nargs="?", help="with -b: where the new branch starts (default HEAD)")
    p.add_argument("-b", dest="create", action="store_true", help="create branch REF first")

    p = sub.add_parser("tag", help="list tags, --releases, create NAME, or delete (-d NAME)")
    p.add_argument("name", nargs="?")
    p.add_argument("-m", "--message", help="description")
    p.add_argument("--commit", metavar="REF", help="commit to tag (default HEAD)")
    p.add_argument("--releases", action="store_true", help="list only releases, by version")
    p.add_argument("-d", "--delete", metavar="NAME")
    _json_flag(p)

    p = sub.add_parser("merge", help="merge REF into the current branch in weight space")
    p.add_argument("ref")
    p.add_argument("--strategy", choices=STRATEGIES, default="average", help="how float tensors combine")
    p.add_argument("--weights", metavar="A,B", help="w_ours,w_theirs (weighted, task_arithmetic, ties, dare*)")
    p.add_argument("--density", type=float, metavar="D", help="fraction of each task vector kept, in (0, 1]")
    p.add_argument("--seed", type=int, metavar="N", help="random seed of dare / dare_ties (recorded)")
    p.add_argument("--t", type=float, metavar="T", help="slerp position in [0, 1] (0 = ours, 1 = theirs)")
    p.add_argument(
        "--per-tensor", action="append", metavar="GLOB=CHOICE", help="strategy, ours or theirs for tensors "
        "matching GLOB (repeatable, first match wins)",
    )
    side = p.add_mutually_exclusive_group()
    side.add_argument("--ours", action="store_true", help="on conflict keep our tensor")
    side.add_argument("--theirs", action="store_true", help="on conflict take theirs")
    p.add_argument("-m", "--message")

    p = sub.add_parser("export", help="write a commit's tensors to a file (safetensors) or a plugin's format")
    p.add_argument("ref")
    p.add_argument("out")
    p.add_argument("--format", default="safetensors", help="safetensors (core) or a plugin format such as hf")
    p.add_argument("--weights-only", action="store_true", help="leave out optim/, sched/, rng/, data/ state")
    _json_flag(p)

    p = sub.add_parser("import", help="commit the tensors of a .safetensors/.pt/.bin file or a model folder")
    p.add_argument("file")
    p.add_argument("-m", "--message")
    p.add_argument("--allow-empty", action="store_true", help="commit even when the file holds exactly HEAD's tensors")
    _json_flag(p)

    p = sub.add_parser("gc", help="delete objects no live commit needs")
    p.add_argument(
        "--expire-reflog", metavar="WHEN", default=None,
        help="keep what the reflog reached within WHEN (default 30d; 'now' lets it all go, 'never' keeps it)",
    )
    _json_flag(p)

    p = sub.add_parser("reflog", help="where a branch, tag or HEAD pointed, newest first (REF@{N} names entry N)")
    p.add_argument("ref", nargs="?", default="HEAD", help="branch, tag or HEAD (default HEAD)")
    _json_flag(p)

    p = sub.add_parser("fsck", help="verify every reachable commit and chunk (exit 1 when damaged)")
    fsck_remote = p.add_mutually_exclusive_group()
    fsck_remote.add_argument("--remote", metavar="NAME", help="verify remote NAME instead of this repository")
    fsck_remote.add_argument("--repair", metavar="NAME", help="replace damaged local objects with copies from NAME")
    _json_flag(p)

    p = sub.add_parser("du", help="logical vs stored bytes per commit (or per tensor of REF), dedup ratio")
    p.add_argument("ref", nargs="?")
    p.add_argument("-n", "--limit", type=_count, metavar="N")
    _json_flag(p)

    p = sub.add_parser("repack", help="re-encode older chunks as deltas against newer ones")
    p.add_argument("--branch")
    p.add_argument("--max-commits", type=_count, metavar="N")
    _json_flag(p)

    p = sub.add_parser("plugins", help="loaded plugins and the distribution each came from")
    _json_flag(p)
    for module in (cmd_plot, cmd_compare, cmd_report):  # provenance and history views (issue 29)
        module.add_parser(sub)
    cmd_remote.add_parsers(sub, _json_flag)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


_REPO_COMMANDS: dict[str, Command] = {
    "status": cmd_history.run_status,
    "log": cmd_history.run_log,
    "show": cmd_history.run_show,
    "diff": cmd_history.run_diff,
    "branch": cmd_refs.run_branch,
    "checkout": cmd_refs.run_checkout,
    "tag": cmd_refs.run_tag,
    "merge": cmd_refs.run_merge,
    "reflog": cmd_refs.run_reflog,
    "export": cmd_transfer.run_export,
    "import": cmd_transfer.run_import,
    "gc": cmd_storage.run_gc,
    "fsck": cmd_storage.run_fsck,
    "du": cmd_storage.run_du,
    "repack": cmd_storage.run_repack,
    "plot": cmd_plot.run_plot,
    "compare": cmd_compare.run_compare,
    "report": cmd_report.run_report,
    **cmd_remote.COMMANDS,
}


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logger = logging.getLogger("coral")
    logger.setLevel(level)
    if not any(getattr(h, "_coral_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._coral_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for h in logger.handlers:
        if getattr(h, "_coral_cli", False):
            h.stream = sys.stderr  # type: ignore[attr-defined]  # follow redirection between in-process calls


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    out = Output(json_mode=getattr(args, "json", False))
    cwd = Path(args.cwd).expanduser() if args.cwd else Path.cwd()
    if args.cwd and not cwd.is_dir():
        raise CoralError(f"-C {args.cwd}: no such folder")
    if args.command == "init":
        return cmd_setup.run_init(args, out, cwd)
    if args.command == "plugins":
        return cmd_setup.run_plugins(args, out)
    if args.command == "clone":
        return cmd_remote.run_clone(args, out, cwd)
    with Repository.find(cwd) as repo:
        return _REPO_COMMANDS[args.command](repo, args, out)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coral`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code (0 ok, 1 error)."""
    try:
        return _run(argv)
    except SystemExit as exc:  # --help and --version exit 0 through argparse
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 1
    except BrokenPipeError:
        # `coral log | head`: the reader left; stop quietly (and keep Python from complaining at exit)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 0
    except (CoralError, OSError) as exc:
        if os.environ.get("CORAL_DEBUG"):
            traceback.print_exc()
        prefix = "" if isinstance(exc, CoralError) else f"{type(exc).__name__}: "
        sys.stderr.write(f"error: {prefix}{_one_line(exc)}\n")
        return 1
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("CORAL_DEBUG"):
            traceback.print_exc()
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (set CORAL_DEBUG=1 for the traceback)\n"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
