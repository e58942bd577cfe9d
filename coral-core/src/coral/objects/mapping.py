"""Lay a tensor's chunks side by side in one span of memory: raw chunks mapped from their files, no copy.

A ``Region`` reserves address space for the whole tensor, then maps each page-aligned raw chunk's body
into its place (``MAP_PRIVATE | MAP_FIXED``: the pages are the page cache's own, and a write to the array
copies the page, never reaching the file). Chunks that cannot be mapped (compressed, deltas, bodies not at
a page boundary) get anonymous memory at their place, which the caller fills by decoding. The region is
unmapped when the last array viewing it is collected.

Linux only (``mmap`` through ctypes, which the standard ``mmap`` module cannot place at an address);
``available()`` says whether it can be used here.
"""

from __future__ import annotations

import ctypes
import mmap as _mmap
import os
import sys
import weakref

import numpy as np

PAGE = _mmap.PAGESIZE
_PROT_NONE, _PROT_READ, _PROT_WRITE = 0, 1, 2
_MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x10, 0x20, 0x4000  # Linux values
_FAILED = ctypes.c_void_p(-1).value


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def available() -> bool:
    """True where tensors can be mapped from chunk files (Linux, 64-bit)."""
    return _LIBC is not None


def _round_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _unmap(addr: int, size: int) -> None:
    if _LIBC is not None:
        _LIBC.munmap(addr, size)


class Region:
    """Reserved address space for ``nbytes`` (plus ``lead`` bytes before them), filled part by part."""

    def __init__(self, nbytes: int, lead: int = 0) -> None:
        if _LIBC is None:
            raise OSError("memory mapping of chunks is not available on this platform")
        self.nbytes, self.lead = nbytes, lead
        self.size = _round_up(max(1, lead + nbytes))
        addr = _LIBC.mmap(None, self.size, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        if addr in (None, _FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"cannot reserve {self.size} bytes of address space: {os.strerror(err)}")
        self.addr: int = addr
        self._finalizer: weakref.finalize | None = None

    def map_file(self, at: int, fd: int, offset: int, length: int) -> None:
        """Map ``length`` bytes of the file at ``offset`` (page-aligned) to ``at`` (page-aligned) in the region."""
        self._fixed(at, length, _MAP_PRIVATE | _MAP_FIXED, fd, offset)

    def map_anonymous(self, at: int, length: int) -> None:
        """Back ``length`` bytes at ``at`` with fresh zeroed memory (the caller fills it)."""
        self._fixed(at, length, _MAP_PRIVATE | _MAP_FIXED | _MAP_ANONYMOUS, -1, 0)

    def _fixed(self, at: int, length: int, flags: int, fd: int, offset: int) -> None:
        if at % PAGE or offset % PAGE or at + length > self.size:
            raise ValueError("mapping outside the region or not page-aligned")
        got = _LIBC.mmap(self.addr + at, _round_up(length), _PROT_READ | _PROT_WRITE, flags, fd, offset)  # type: ignore[union-attr]
        if got != self.addr + at:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot map {length} bytes: {os.strerror(err)}")

    def array(self) -> np.ndarray:
        """The region's ``nbytes`` (after ``lead``) as a uint8 array; the region lives as long as it does."""
        buf = (ctypes.c_char * (self.lead + self.nbytes)).from_address(self.addr)
        self._finalizer = weakref.finalize(buf, _unmap, self.addr, self.size)
        return np.frombuffer(memoryview(buf), dtype=np.uint8, count=self.nbytes, offset=self.lead)

    def release(self) -> None:
        """Unmap now, on an error before any array was handed out (after that, collection unmaps it)."""
        if self._finalizer is None:
            _unmap(self.addr, self.size)
            self.addr = 0
