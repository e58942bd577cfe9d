"""The preemption helpers (preempt_helpers.py) and training scripts sit next to the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def no_exit_wait_limit_leaks():
    """A preemption in this process bounds every later wait for pushes (the process is stopping); the tests
    that follow in the same worker go on, so each starts without that bound."""
    from coral.version_control.background import clear_exit_wait_limit

    yield
    clear_exit_wait_limit()
