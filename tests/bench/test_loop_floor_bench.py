"""bench/loop_floor.py refuses bad input at once, with one line naming the option and the value (before it
imports torch or trains anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rounds", "0"], "--rounds: must be at least 1, got 0"),
        (["--steps", "-5"], "--steps: must be at least 1, got -5"),
        (["--every", "0"], "--every: must be at least 1, got 0"),
        (["--work", "/nonexistent/coral-bench"], "--work: no such folder: /nonexistent/coral-bench"),
    ],
)
def test_bad_input_is_one_line(args: list[str], says: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "loop_floor.py"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("loop_floor.py: error: ")
