"""Helpers for running the user guide's (seed 000, chapter 6) code blocks as written.

Each test module holds its section's blocks verbatim. What the guide leaves to the reader (``model``,
``num_epochs``, ...) comes from a small preamble; the only edits to a block are named where they are made
(placeholder hashes and paths that cannot exist, loop bodies that are only a comment).
"""

from __future__ import annotations

import textwrap

import pytest

GUIDE_HASH = '"a7f3c2d1"'
GUIDE_HASH_2 = '"b8e4f5a2"'


def run(code: str, ns: dict, **replace: str) -> dict:
    """Execute one guide block in ``ns`` after the named literal replacements (``old=new`` pairs)."""
    for old, new in replace.items():
        assert old in code, f"{old!r} is not in the block any more"
        code = code.replace(old, new)
    exec(compile(textwrap.dedent(code), "<guide>", "exec"), ns)  # noqa: S102 - the guide's own code
    return ns


def sub(code: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        assert old in code, f"{old!r} is not in the block any more"
        code = code.replace(old, new)
    return code


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
