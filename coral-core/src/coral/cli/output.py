"""How the CLI talks: rich tables and lines on stdout, JSON for scripts, progress bars on a terminal's stderr."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from ..version_control.jsonsafe import to_jsonable


class Output:
    """One per command run. Consoles are made at call time so redirected ``sys.stdout`` (tests, pipes) is used."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        tty = sys.stdout.isatty()
        # off a terminal rich would wrap at 80 columns and split hashes; scripts should use --json anyway
        width = None if tty or "COLUMNS" in os.environ else 200
        self.console = Console(file=sys.stdout, highlight=False, width=width, soft_wrap=False)
        self.err = Console(file=sys.stderr, highlight=False)

    def json(self, value: Any) -> None:
        """Print ``value`` as JSON (NaN/inf become ``{"__float__": "nan"}``, like commit metadata)."""
        sys.stdout.write(json.dumps(to_jsonable(value, "output"), indent=2) + "\n")
        sys.stdout.flush()

    def line(self, text: str | Text = "") -> None:
        """One line, printed literally (no rich markup), never wrapped."""
        self.console.print(text if isinstance(text, Text) else Text(text), soft_wrap=True)

    def table(self, *columns: str, title: str | None = None, right: tuple[str, ...] = ()) -> PlainTable:
        """A borderless table; cells are plain text (a ``[`` in a tensor name is never rich markup)."""
        table = PlainTable(box=None, header_style="bold", pad_edge=False, show_edge=False)
        table.caption_text = title
        for col in columns:
            table.add_column(col, justify="right" if col in right else "left", overflow="fold")
        return table

    def print_table(self, table: PlainTable) -> None:
        if table.caption_text:
            self.line(table.caption_text)
        if self.console.is_terminal:
            self.console.print(table)
            return
        with self.console.capture() as cap:
            self.console.print(table)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in cap.get().splitlines()))
        sys.stdout.flush()

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[Any]:
        """A byte-progress bar on stderr when it is a terminal (and not in --json mode); yields
        ``update(done, total)``."""
        show = self.err.is_terminal and not self.json_mode
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=not show,
        )
        with bar:
            task = bar.add_task(description, total=None)
            totals: list[int] = []

            def update(done: int, total: int) -> None:
                # rich drops its rate samples whenever the total changes, and the transfer's estimate is a few
                # header bytes off the final count: the first total is kept, or the rate would show "?"
                if not totals:
                    totals.append(total)
                    bar.update(task, completed=done, total=total)
                else:
                    bar.update(task, completed=done)

            yield update

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner on a terminal's stderr while slow work (gc, fsck, repack) runs."""
        if self.err.is_terminal and not self.json_mode:
            with self.err.status(message):
                yield
        else:
            yield


class PlainTable(Table):
    """A rich Table whose string cells are literal text."""

    caption_text: str | None = None

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def human_time(ts: float) -> str:
    """Local date and minute of a timestamp, as ``git log`` shows it."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def iso_time(ts: float | None) -> str | None:
    """UTC ISO-8601 time for JSON output (what ``CommitInfo.to_dict`` uses)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def short(commit: str | None) -> str:
    return commit[:8] if commit else "-"
