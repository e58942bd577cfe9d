"""Re-export a plugin package under ``coral.integrations.*``, or fail with the pip command that fixes it."""

from __future__ import annotations

import importlib
from types import ModuleType


def load(module: str, distribution: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and not exc.name.startswith(module.split(".")[0]):
            raise ImportError(f"{what} needs {exc.name!r}, which is not installed: pip install {distribution}") from exc
        raise ImportError(f"{what} is provided by the {distribution} package: pip install {distribution}") from exc
