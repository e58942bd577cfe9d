"""Tensor-level object store: tensors in, content-addressed chunks out (and back, hash-checked)."""

from .tensors import CHUNK_BYTES, ObjectStore, TensorEntry, chunk_key

__all__ = ["CHUNK_BYTES", "ObjectStore", "TensorEntry", "chunk_key"]
