"""Shared pieces for the coral-hf tests: offline HF, and the tiny Trainer run of ``tiny_run.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
TINY_RUN = HERE / "tiny_run.py"


def _load_tiny_run() -> ModuleType:
    name = "coral_hf_tests_tiny_run"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TINY_RUN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def tiny() -> ModuleType:
    """The ``tiny_run`` helper module: make_model, TinyDataset, run(spec)."""
    return _load_tiny_run()
