"""Lazy package exports for plugin packages: names load on first use, so loading a plugin's hooks never
imports its framework (and never shifts the framework's RNG)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__``/``__dir__`` for ``package``: ``where`` maps a name to a submodule (``"callback"``, relative
    to the package) or to an absolute module (``"coral.errors"``)."""
    names = sorted(set(public))

    def __getattr__(name: str) -> Any:
        target = where.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target) if "." in target else importlib.import_module(f".{target}", package)
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
