"""Coral's built-in backends pass the reusable store contract (the same suite a third-party backend runs)."""

from __future__ import annotations

import uuid

from coral.store import LocalStore, MemoryStore
from coral.testing import StoreContract


class TestLocalStoreContract(StoreContract):
    def make_store(self, tmp_path):
        return LocalStore(tmp_path / "store")

    def reopen(self, store):
        return LocalStore(store.root)

    def url(self, store):
        return f"file://{store.root}"


class TestMemoryStoreContract(StoreContract):
    def make_store(self, tmp_path):
        return MemoryStore.from_url(f"memory://contract-{uuid.uuid4().hex}")

    def reopen(self, store):
        return MemoryStore.from_url(self.url(store))

    def url(self, store):
        return next(f"memory://{name}" for name, s in MemoryStore._named.items() if s is store)
