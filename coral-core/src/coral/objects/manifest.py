"""What a commit's tree records per tensor (``TensorEntry``), chunk ids and keys, and the layout limits.

A chunk's id is the BLAKE3 hash of its decoded bytes; a tensor is stored as ``CHUNK_BYTES`` slices, or,
when it is at most ``PACK_MAX`` bytes, at an offset in a pack chunk it shares with other small tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np

from ..core.dtypes import dtype_from_name
from ..errors import CorruptObjectError

CHUNK_BYTES = 4 * 1024 * 1024
MAX_ELEMENTS = 1 << 40  # refuse absurd manifests before allocating
# Tensors up to PACK_MAX bytes (biases, norms, scalars) share "pack" chunks, one per dtype and save: a file
# per tensor would cost far more than its bytes. Small enough that a frozen tensor rewritten with a changed
# neighbour costs little (and repack turns the older pack into a near-empty delta).
PACK_MAX = 16 * 1024
_ID = re.compile(r"[0-9a-f]{64}")  # a regex: checked for every chunk of every manifest a load parses


def chunk_key(chunk_id: str) -> str:
    """The store key of a chunk: ``chunks/<first two hex digits>/<the rest>``."""
    return f"chunks/{chunk_id[:2]}/{chunk_id[2:]}"


def hash_bytes(data: memoryview | bytes) -> str:
    """A chunk's id: the BLAKE3 hex digest of its decoded bytes (one thread; the pool parallelises)."""
    return blake3.blake3(data, max_threads=1).hexdigest()


def is_id(value: Any) -> bool:
    """True for a 64-digit lowercase hex string (a chunk id or digest)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclass
class TensorEntry:
    """How one tensor is stored: dtype, shape and its chunk ids in order."""

    dtype: str
    shape: tuple[int, ...]
    chunks: list[str]
    layer_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    offset: int | None = None  # a small tensor's byte offset in the one pack chunk it shares with others
    digest: str | None = None  # BLAKE3 of a packed tensor's own bytes: its identity (the pack id is shared)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * dtype_from_name(self.dtype).itemsize

    @property
    def packed(self) -> bool:
        return self.offset is not None

    @property
    def identity(self) -> tuple[Any, ...]:
        """Equal for two entries exactly when they hold the same tensor (dtype, shape and bytes)."""
        content = ("packed", self.digest) if self.offset is not None else tuple(self.chunks)
        return (self.dtype, tuple(self.shape), content)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "chunks": list(self.chunks)}
        if self.offset is not None:
            d["offset"] = self.offset
            d["digest"] = self.digest
        if self.layer_type:
            d["layer_type"] = self.layer_type
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_json(cls, name: str, d: Any) -> TensorEntry:
        """Parse and validate a manifest entry; absurd shapes and bad ids are refused before allocating."""
        if not isinstance(d, dict):
            raise CorruptObjectError("manifest", "tensor entry is not an object", tensor=name)
        try:
            dtype = str(d["dtype"])
            itemsize = dtype_from_name(dtype).itemsize
            shape = tuple(int(s) for s in d["shape"])
            chunks = [str(c) for c in d["chunks"]]
        except Exception as exc:  # noqa: BLE001 - any malformed entry is a corrupt manifest
            raise CorruptObjectError("manifest", f"bad tensor entry: {exc}", tensor=name) from None
        if any(s < 0 for s in shape) or len(shape) > 64:
            raise CorruptObjectError("manifest", f"invalid shape {shape}", tensor=name)
        n = 1
        for s in shape:
            n *= s
            if n > MAX_ELEMENTS:
                raise CorruptObjectError("manifest", f"absurd shape {shape}", tensor=name)
        offset, digest = d.get("offset"), d.get("digest")
        if offset is not None:  # a packed small tensor: one pack chunk, and its place in it
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or offset % itemsize:
                raise CorruptObjectError("manifest", f"bad pack offset {offset!r}", tensor=name)
            if len(chunks) != 1 or not 0 < n * itemsize <= PACK_MAX or offset + n * itemsize > CHUNK_BYTES:
                why = f"bad packed entry ({n * itemsize} bytes at {offset})"
                raise CorruptObjectError("manifest", why, tensor=name)
            if not is_id(digest):
                raise CorruptObjectError("manifest", f"bad digest {digest!r}", tensor=name)
        else:
            expected = -(-n * itemsize // CHUNK_BYTES) if n else 0
            if len(chunks) != expected and not (n == 0 and len(chunks) == 0):
                raise CorruptObjectError("manifest", f"{len(chunks)} chunks for {n * itemsize} bytes", tensor=name)
            digest = None
        for c in chunks:
            if not is_id(c):
                raise CorruptObjectError("manifest", f"bad chunk id {c!r}", tensor=name)
        return cls(dtype, shape, chunks, d.get("layer_type"), dict(d.get("extra") or {}), offset, digest)


def pack_bytes(tree: Any) -> dict[str, int]:
    """{pack chunk id: bytes of the tree's tensors in it}: splits a shared pack's cost among its tensors."""
    out: dict[str, int] = {}
    for entry in tree.values():
        if entry.offset is not None:
            out[entry.chunks[0]] = out.get(entry.chunks[0], 0) + entry.nbytes
    return out
