"""The reliability harness modules (``relh_*``) sit next to the tests; child processes run them as scripts."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def seed() -> int:
    """A fresh random seed per test (kill instants, flipped bytes); CORAL_RELIABILITY_SEED replays one."""
    return int(os.environ.get("CORAL_RELIABILITY_SEED") or random.SystemRandom().randrange(2**31))
