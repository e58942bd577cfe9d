"""Reusable test suites for Coral extensions (needs pytest; ``import coral`` never imports this package).

A storage backend, Coral's own or a third party's, proves itself by subclassing :class:`StoreContract`::

    from coral.testing import StoreContract

    class TestMyStore(StoreContract):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "store")
"""

from .store import StoreContract

__all__ = ["StoreContract"]
