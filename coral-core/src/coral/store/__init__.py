"""Byte-level storage backends: immutable objects by key, plus small mutable refs with compare-and-swap."""

from .atomicfile import atomic_open, atomic_write
from .base import Store, validate_key
from .fsspec_store import FsspecStore
from .local import LocalStore
from .memory import MemoryStore
from .registry import open_store, storage_backends
from .s3 import S3Store

__all__ = [
    "FsspecStore",
    "LocalStore",
    "MemoryStore",
    "S3Store",
    "Store",
    "atomic_open",
    "atomic_write",
    "open_store",
    "storage_backends",
    "validate_key",
]
