"""Byte-level storage backends: immutable objects by key, plus small mutable refs with compare-and-swap."""

from .base import Store, validate_key
from .local import LocalStore
from .memory import MemoryStore
from .registry import open_store, storage_backends

__all__ = ["LocalStore", "MemoryStore", "Store", "open_store", "storage_backends", "validate_key"]
