"""Byte-level storage backends: immutable objects by key, plus small mutable refs with compare-and-swap."""

from .atomicfile import atomic_open, atomic_write
from .base import Store, validate_key
from .local import LocalStore
from .memory import MemoryStore
from .registry import open_store, storage_backends

__all__ = [
    "LocalStore",
    "MemoryStore",
    "Store",
    "atomic_open",
    "atomic_write",
    "open_store",
    "storage_backends",
    "validate_key",
]
