"""Coral's own storage backends, supplied through the same hook a third party uses."""

from __future__ import annotations

from typing import Callable

from ..hookspecs import hookimpl
from .local import LocalStore
from .memory import MemoryStore


@hookimpl
def coral_storage_backends(register: Callable[[str, type], None]) -> None:
    register("file", LocalStore)
    register("memory", MemoryStore)
