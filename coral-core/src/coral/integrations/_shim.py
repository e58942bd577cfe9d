"""Re-export a plugin package under ``coral.integrations.*``, or fail with the pip command that fixes it.

Names resolve on first use (the plugin packages export lazily too), so ``from coral.integrations.pytorch import
Checkpointer`` imports the checkpointer's modules only, not every module of the package (``torch.distributed``'s
checkpoint machinery alone costs seconds of a cold start, which a resuming process would pay).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _missing(exc: ImportError, module: str, distribution: str, what: str) -> ImportError:
    if exc.name and not exc.name.startswith(module.split(".")[0]):
        return ImportError(f"{what} needs {exc.name!r}, which is not installed: pip install {distribution}")
    return ImportError(f"{what} is provided by the {distribution} package: pip install {distribution}")


def lazy(
    module: str, distribution: str, what: str
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for a shim module: ``module`` is imported now (a missing
    package raises an ImportError naming the fix at once), each name on first use (its ImportError names the fix
    too)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise _missing(exc, module, distribution, what) from exc
    names = sorted(getattr(mod, "__all__", []))

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {what!r} has no attribute {name!r}")
        try:
            return getattr(mod, name)
        except ImportError as exc:
            raise _missing(exc, module, distribution, what) from exc

    def __dir__() -> list[str]:
        return list(names)

    return names, __getattr__, __dir__
