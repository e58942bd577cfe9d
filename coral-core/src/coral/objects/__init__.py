"""Tensor-level object store: tensors in, content-addressed chunks out (and back, hash-checked).

``ObjectStore`` (``tensors``) is the front; the jobs behind it live in ``manifest``, ``writer``,
``reader``, ``mapped``, ``reencode``, around one ``IOPool`` (``pool``) and one ``ChunkCache`` (``cache``).
"""

from .cache import ChunkCache
from .manifest import CHUNK_BYTES, PACK_MAX, TensorEntry, chunk_key, hash_bytes, pack_bytes
from .mapped import MappedLoader
from .pool import IOPool
from .reader import TensorReader
from .reencode import MAX_DELTA_DEPTH, Reencoder
from .tensors import ObjectStore
from .writer import PendingWrites, TensorWriter

__all__ = [
    "CHUNK_BYTES",
    "MAX_DELTA_DEPTH",
    "PACK_MAX",
    "ChunkCache",
    "IOPool",
    "MappedLoader",
    "ObjectStore",
    "PendingWrites",
    "Reencoder",
    "TensorEntry",
    "TensorReader",
    "TensorWriter",
    "chunk_key",
    "hash_bytes",
    "pack_bytes",
]
