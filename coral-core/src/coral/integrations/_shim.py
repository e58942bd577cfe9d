"""Re-export a plugin package under ``coral.integrations.*``, or fail with the pip command that fixes it."""

from __future__ import annotations

import importlib
from typing import Any


def load(module: str, distribution: str, what: str) -> dict[str, Any]:
    """Import ``module`` and every name in its ``__all__``; a missing package raises an ImportError naming the fix."""
    try:
        mod = importlib.import_module(module)
        return {name: getattr(mod, name) for name in getattr(mod, "__all__", [])}
    except ImportError as exc:
        if exc.name and not exc.name.startswith(module.split(".")[0]):
            raise ImportError(f"{what} needs {exc.name!r}, which is not installed: pip install {distribution}") from exc
        raise ImportError(f"{what} is provided by the {distribution} package: pip install {distribution}") from exc
