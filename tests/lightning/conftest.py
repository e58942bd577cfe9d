"""Fixtures for the Lightning plugin tests: the shared tiny app, loaded under a unique module name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

APP_PATH = Path(__file__).with_name("lightning_app.py")


def _load_app() -> ModuleType:
    name = "coral_lightning_tests_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, APP_PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def app() -> ModuleType:
    return _load_app()


@pytest.fixture
def app_path() -> Path:
    return APP_PATH
