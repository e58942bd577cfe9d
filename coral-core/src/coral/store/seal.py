"""The local store's integrity seal: a 20-byte record at the end of every object file.

Ids hash the *decoded* bytes, so without a seal a flipped byte the decoder ignores (a reserved header
byte, a zstd frame flag) would go unseen. The record is ``magic, payload length, check value``; the magic
says the seal's format version, so objects written by older versions keep loading:

- version 1, magic ``CRLS``: sum mod 2**64 of the payload's little-endian 64-bit words (last word
  zero-padded). It catches any single changed byte, but not two words swapped.
- version 2, magic ``CRL2`` (written now): xxh3-64 of the payload. It catches reordering too, at the same
  speed, and releases the GIL like the sum did.

The record sits at the end (not the start) so that raw chunk bodies stay at page-aligned file offsets,
where mapped loads need them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from ..errors import CorruptObjectError

RECORD = struct.Struct("<4sQQ")
SIZE = RECORD.size
MAGIC_WORD_SUM = b"CRLS"  # version 1
MAGIC_XXH3 = b"CRL2"  # version 2
VERSIONS = {MAGIC_WORD_SUM: 1, MAGIC_XXH3: 2}
CURRENT = 2
_MASK64 = (1 << 64) - 1

Parts = Sequence[bytes | bytearray | memoryview]


def word_sum(parts: Parts) -> int:
    """Version 1's check value: the sum mod 2**64 of the little-endian 64-bit words of ``parts`` joined."""
    total, carry = 0, b""
    for part in parts:
        view = memoryview(part).cast("B")
        if carry:
            take = 8 - len(carry)
            carry += bytes(view[:take])
            view = view[take:]
            if len(carry) < 8:
                continue
            total += int.from_bytes(carry, "little")
            carry = b""
        n = len(view) // 8 * 8
        if n:
            total += int(np.frombuffer(view[:n], dtype="<u8").sum(dtype=np.uint64))
        carry = bytes(view[n:])
    return (total + int.from_bytes(carry, "little")) & _MASK64


def xxh3(parts: Parts) -> int:
    """Version 2's check value: xxh3-64 of ``parts`` joined."""
    h = xxhash.xxh3_64()
    for part in parts:
        h.update(part)
    return h.intdigest()


def make(parts: Parts) -> bytes:
    """The seal record (current version) to append after ``parts``."""
    return RECORD.pack(MAGIC_XXH3, sum(memoryview(p).nbytes for p in parts), xxh3(parts))


@dataclass(frozen=True)
class Seal:
    """A seal read from an object file: its format version, the payload length and the check value."""

    version: int
    length: int
    value: int

    def matches(self, parts: Parts) -> bool:
        """True when ``parts`` (the whole payload, in pieces) has this seal's length and check value."""
        if sum(memoryview(p).nbytes for p in parts) != self.length:
            return False
        return (word_sum(parts) if self.version == 1 else xxh3(parts)) == self.value


def read(fd: int, name: str) -> Seal:
    """The seal of the object file open as ``fd``; a missing, unknown or inconsistent one is damage to
    ``name``."""
    size = os.fstat(fd).st_size
    raw = os.pread(fd, SIZE, size - SIZE) if size >= SIZE else b""
    if len(raw) != SIZE:
        raise CorruptObjectError(name, f"file is {size} bytes, too short to be an object")
    magic, length, value = RECORD.unpack(raw)
    version = VERSIONS.get(magic)
    if version is None or length != size - SIZE:
        raise CorruptObjectError(name, "integrity seal is damaged (truncated, extended or edited)")
    return Seal(version, length, value)
