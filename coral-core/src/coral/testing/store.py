"""StoreContract: the whole behaviour a Coral storage backend must have, as a pytest test class.

Subclass it in a module pytest collects, name the subclass ``Test...`` and implement :meth:`make_store`;
every ``test_*`` method below then runs against your backend. Coral's own ``LocalStore`` and
``MemoryStore`` run the same suite (``tests/core/test_store_contract.py``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..errors import InvalidNameError, LockTimeoutError, ObjectNotFoundError
from ..store.base import Store

_BAD_KEYS = ["", "/abs", "../escape", "a/../../b", "a/./b", "a//b", "a/", "a\x00b", "a\\b", "..", "."]


class StoreContract:
    """Contract tests for a :class:`coral.store.base.Store` backend.

    Override :meth:`make_store`; optionally :meth:`reopen` (a second handle on the same data) and
    :meth:`url` (a URL that ``coral.store.open_store`` resolves to the same data through the plugins).
    """

    #: False for a backend whose ``lock()`` is a no-op (then never run ``Repository.gc`` beside writers).
    exclusive_lock: bool = True
    #: False for a backend that takes ``lock(..., exclusive=False)`` exclusively too (correct, but writers
    #: then wait for each other); True claims shared holders really hold the lock together.
    shared_lock: bool = True
    #: how many threads the concurrency tests start
    threads: int = 8

    # ---- what a backend supplies --------------------------------------------------------------------------
    def make_store(self, tmp_path: Path) -> Store:
        """Return a new, empty store; ``tmp_path`` is a fresh folder for this test alone."""
        raise NotImplementedError("subclasses of StoreContract must implement make_store(tmp_path)")

    def reopen(self, store: Store) -> Store | None:
        """A second, independent handle on ``store``'s data, or None when the backend has no such notion."""
        return None

    def url(self, store: Store) -> str | None:
        """A URL naming ``store``'s data that ``open_store`` can resolve, or None to skip that test."""
        return None

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = self.make_store(tmp_path)
        try:
            yield s
        finally:
            s.close()

    # ---- identity -----------------------------------------------------------------------------------------
    def test_is_a_coral_store_with_a_scheme(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.scheme, str) and store.scheme
        assert isinstance(store.describe(), str)

    # ---- objects ------------------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "payload",
        [b"", b"x", bytes(range(256)), b"\x00" * 1000, os.urandom(3 * 1024 * 1024 + 7)],
        ids=["empty", "one-byte", "all-byte-values", "zeros", "3MiB-random"],
    )
    def test_put_get_roundtrip_is_exact(self, store: Store, payload: bytes) -> None:
        assert store.put("chunks/ab/cdef", payload) is True
        got = store.get("chunks/ab/cdef")
        assert isinstance(got, bytes)
        assert got == payload
        assert store.size("chunks/ab/cdef") == len(payload)

    def test_put_accepts_memoryview_and_copies_it(self, store: Store) -> None:
        buf = bytearray(b"0123456789" * 100)
        store.put("k", memoryview(buf)[10:30])
        buf[10:30] = b"X" * 20  # the caller reuses its buffer: the stored object must not change
        assert store.get("k") == b"0123456789" * 2

    def test_begin_put_parts_copies_now_and_is_readable_after_finish(self, store: Store) -> None:
        buf = bytearray(b"abcdefgh" * 512)
        pending = store.begin_put_parts("chunks/ab/two-phase", [b"head:", memoryview(buf)])
        buf[:] = b"X" * len(buf)  # the caller may reuse its buffers once begin_put_parts returned
        assert pending.finish() is True
        assert store.get("chunks/ab/two-phase") == b"head:" + b"abcdefgh" * 512
        again = store.begin_put_parts("chunks/ab/two-phase", [b"other"])
        assert again.finish() is False  # an existing object is kept, like put()
        assert store.get("chunks/ab/two-phase") == b"head:" + b"abcdefgh" * 512

    def test_put_existing_key_keeps_first_and_returns_false(self, store: Store) -> None:
        assert store.put("k", b"first") is True
        assert store.put("k", b"second") is False
        assert store.get("k") == b"first"

    def test_put_overwrite_replaces(self, store: Store) -> None:
        store.put("k", b"first")
        assert store.put("k", b"second, longer", overwrite=True) is True
        assert store.get("k") == b"second, longer"
        assert store.size("k") == len(b"second, longer")

    def test_missing_object_raises_object_not_found_naming_key(self, store: Store) -> None:
        with pytest.raises(ObjectNotFoundError, match="nope"):
            store.get("chunks/no/nope")
        with pytest.raises(KeyError):  # ObjectNotFoundError is also a KeyError
            store.get("chunks/no/nope")
        with pytest.raises(ObjectNotFoundError):
            store.size("chunks/no/nope")
        assert store.has("chunks/no/nope") is False

    def test_has(self, store: Store) -> None:
        assert not store.has("a/b")
        store.put("a/b", b"1")
        assert store.has("a/b")
        assert not store.has("a/c")

    def test_get_range(self, store: Store) -> None:
        data = bytes(range(200))
        store.put("r", data)
        assert store.get_range("r", 0, 10) == data[:10]
        assert store.get_range("r", 50, 20) == data[50:70]
        assert store.get_range("r", 190, 100) == data[190:]
        assert store.get_range("r", 500, 10) == b""
        with pytest.raises(ObjectNotFoundError):
            store.get_range("missing", 0, 1)

    def test_list_all_and_by_prefix(self, store: Store) -> None:
        keys = {"chunks/ab/cdef", "chunks/ab/0123", "chunks/cd/x", "commits/aa/bb", "top"}
        keys |= {f"many/{i:03d}" for i in range(120)}
        for k in keys:
            store.put(k, k.encode())
        listed = list(store.list())
        assert len(listed) == len(set(listed)), "list() yielded a key twice"
        assert set(listed) == keys
        assert set(store.list("chunks/")) == {"chunks/ab/cdef", "chunks/ab/0123", "chunks/cd/x"}
        assert set(store.list("chunks/ab/")) == {"chunks/ab/cdef", "chunks/ab/0123"}
        assert set(store.list("many/")) == {k for k in keys if k.startswith("many/")}
        assert list(store.list("nothing/")) == []

    def test_delete(self, store: Store) -> None:
        store.put("d/1", b"x")
        store.put("d/2", b"y")
        store.delete("d/1")
        assert not store.has("d/1")
        assert set(store.list("d/")) == {"d/2"}
        with pytest.raises(ObjectNotFoundError):
            store.get("d/1")
        store.delete("d/1")  # deleting an absent key is not an error
        assert store.put("d/1", b"again") is True
        assert store.get("d/1") == b"again"

    @pytest.mark.parametrize("bad", _BAD_KEYS, ids=repr)
    def test_escaping_object_keys_are_refused(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidNameError):
            store.put(bad, b"x")
        assert list(store.list()) == []

    # ---- refs ---------------------------------------------------------------------------------------------
    def test_absent_ref_is_none(self, store: Store) -> None:
        assert store.get_ref("heads/main") is None
        assert store.list_refs() == {}

    def test_cas_creates_only_when_absent(self, store: Store) -> None:
        assert store.compare_and_swap("heads/main", None, "a" * 64) is True
        assert store.get_ref("heads/main") == "a" * 64
        assert store.compare_and_swap("heads/main", None, "b" * 64) is False
        assert store.get_ref("heads/main") == "a" * 64

    def test_cas_updates_only_from_expected_value(self, store: Store) -> None:
        store.compare_and_swap("heads/main", None, "v1")
        assert store.compare_and_swap("heads/main", "wrong", "v2") is False
        assert store.get_ref("heads/main") == "v1"
        assert store.compare_and_swap("heads/main", "v1", "v2") is True
        assert store.get_ref("heads/main") == "v2"

    def test_cas_to_none_deletes(self, store: Store) -> None:
        store.compare_and_swap("tags/t", None, "v1")
        assert store.compare_and_swap("tags/t", "other", None) is False
        assert store.get_ref("tags/t") == "v1"
        assert store.compare_and_swap("tags/t", "v1", None) is True
        assert store.get_ref("tags/t") is None
        assert store.list_refs() == {}
        assert store.compare_and_swap("tags/t", "v1", "v2") is False  # gone: 'v1' no longer matches
        assert store.compare_and_swap("tags/t", None, None) is True  # absent stays absent

    def test_ref_values_roundtrip_unicode_json(self, store: Store) -> None:
        value = '{"commit":"' + "c" * 64 + '","description":"modèle ✓ \\n"}'
        store.compare_and_swap("tags/v1.0", None, value)
        assert store.get_ref("tags/v1.0") == value

    def test_list_refs_by_prefix_with_nested_names(self, store: Store) -> None:
        refs = {
            "HEAD": "ref: heads/main",
            "heads/main": "1",
            "heads/feature/x": "2",
            "tags/v1": "3",
            "meta/doc": "4",
        }
        for name, value in refs.items():
            assert store.compare_and_swap(name, None, value)
        assert store.list_refs() == refs
        assert store.list_refs("heads/") == {"heads/main": "1", "heads/feature/x": "2"}
        assert store.list_refs("tags/") == {"tags/v1": "3"}
        assert store.list_refs("nothing/") == {}

    @pytest.mark.parametrize("bad", _BAD_KEYS, ids=repr)
    def test_escaping_ref_names_are_refused(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidNameError):
            store.compare_and_swap(bad, None, "x")
        assert store.list_refs() == {}

    def test_objects_and_refs_are_separate_namespaces(self, store: Store) -> None:
        store.put("heads/main", b"object")
        store.compare_and_swap("heads/main", None, "ref")
        assert store.get("heads/main") == b"object"
        assert store.get_ref("heads/main") == "ref"
        assert list(store.list()) == ["heads/main"]
        assert store.list_refs() == {"heads/main": "ref"}
        store.delete("heads/main")
        assert store.get_ref("heads/main") == "ref"

    # ---- concurrency ---------------------------------------------------------------------------------------
    def _run_threads(self, target: Callable[[int], object]) -> list[object]:
        results: list[object] = [None] * self.threads
        errors: list[BaseException] = []
        barrier = threading.Barrier(self.threads)

        def run(i: int) -> None:
            try:
                barrier.wait()
                results[i] = target(i)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(self.threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(120)
        assert not any(t.is_alive() for t in workers), "a thread hung"
        if errors:
            raise errors[0]
        return results

    def test_concurrent_cas_create_has_exactly_one_winner(self, store: Store) -> None:
        for round_ in range(5):
            name = f"heads/race{round_}"

            def create(i: int, name: str = name) -> bool:
                return store.compare_and_swap(name, None, f"writer-{i}")

            won = self._run_threads(create)
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"round {round_}: {len(winners)} writers won a create-only CAS"
            assert store.get_ref(name) == f"writer-{winners[0]}"

    def test_concurrent_cas_update_from_same_value_has_exactly_one_winner(self, store: Store) -> None:
        store.compare_and_swap("heads/main", None, "base")
        won = self._run_threads(lambda i: store.compare_and_swap("heads/main", "base", f"writer-{i}"))
        winners = [i for i, ok in enumerate(won) if ok]
        assert len(winners) == 1
        assert store.get_ref("heads/main") == f"writer-{winners[0]}"

    def test_concurrent_cas_counter_loses_no_update(self, store: Store) -> None:
        per_thread = 10

        def bump(_i: int) -> None:
            for _ in range(per_thread):
                while True:
                    cur = store.get_ref("counter")
                    new = str(int(cur or "0") + 1)
                    if store.compare_and_swap("counter", cur, new):
                        break

        self._run_threads(bump)
        assert store.get_ref("counter") == str(self.threads * per_thread)

    def test_concurrent_puts(self, store: Store) -> None:
        same = os.urandom(256 * 1024)
        self._run_threads(lambda i: (store.put("same", same), store.put(f"own/{i}", str(i).encode())))
        assert store.get("same") == same
        assert set(store.list("own/")) == {f"own/{i}" for i in range(self.threads)}
        assert all(store.get(f"own/{i}") == str(i).encode() for i in range(self.threads))

    def test_readers_never_see_a_partial_object(self, store: Store) -> None:
        size = 1024 * 1024
        versions = [bytes([65 + k]) * size for k in range(3)]
        store.put("obj", versions[0])
        stop = threading.Event()
        bad: list[int] = []

        def read() -> None:
            while not stop.is_set():
                got = store.get("obj")
                if got not in versions:
                    bad.append(len(got))

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            for k in range(30):
                store.put("obj", versions[k % 3], overwrite=True)
        finally:
            stop.set()
            for t in readers:
                t.join(60)
        assert not bad, f"readers saw partial objects of sizes {bad[:5]}"

    # ---- locks ---------------------------------------------------------------------------------------------
    def test_exclusive_lock_excludes(self, store: Store) -> None:
        if not self.exclusive_lock:
            pytest.skip("backend declares exclusive_lock = False")
        inside = 0
        peak = 0
        guard = threading.Lock()

        def work(_i: int) -> None:
            nonlocal inside, peak
            for _ in range(3):
                with store.lock("gc", exclusive=True):
                    with guard:
                        inside += 1
                        peak = max(peak, inside)
                    time.sleep(0.002)
                    with guard:
                        inside -= 1

        self._run_threads(work)
        assert peak == 1, f"{peak} holders of one exclusive lock at once"

    @pytest.mark.parametrize("held_exclusive", [True, False], ids=["held-exclusive", "held-shared"])
    def test_exclusive_lock_times_out_while_held(self, store: Store, held_exclusive: bool) -> None:
        if not self.exclusive_lock:
            pytest.skip("backend declares exclusive_lock = False")
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store.lock("gc", exclusive=held_exclusive):
                taken.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert taken.wait(60)
            with pytest.raises(LockTimeoutError), store.lock("gc", exclusive=True, timeout=0.2):
                pass
        finally:
            release.set()
            holder.join(60)
        with store.lock("gc", exclusive=True, timeout=30):  # free again once released
            pass

    def test_shared_locks_are_held_together(self, store: Store) -> None:
        if not self.shared_lock:
            pytest.skip("backend declares shared_lock = False")
        inside = 0
        peak = 0
        guard = threading.Lock()
        everyone_in = threading.Barrier(self.threads)

        def work(_i: int) -> None:
            nonlocal inside, peak
            with store.lock("gc", exclusive=False, timeout=60):
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                everyone_in.wait(60)  # only passes when every thread holds the shared lock at once
                with guard:
                    inside -= 1

        self._run_threads(work)
        assert peak == self.threads, f"only {peak} of {self.threads} shared holders at once"

    def test_exclusive_lock_shuts_out_shared_holders(self, store: Store) -> None:
        if not self.exclusive_lock:
            pytest.skip("backend declares exclusive_lock = False")
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store.lock("gc", exclusive=True):
                taken.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert taken.wait(60)
            with pytest.raises(LockTimeoutError), store.lock("gc", exclusive=False, timeout=0.2):
                pass
        finally:
            release.set()
            holder.join(60)
        with store.lock("gc", exclusive=False, timeout=30):  # free again once released
            pass

    def test_a_shared_holder_does_not_block_other_lock_names(self, store: Store) -> None:
        if not self.exclusive_lock:
            pytest.skip("backend declares exclusive_lock = False")
        with store.lock("gc", exclusive=False), store.lock("other", exclusive=True, timeout=30):
            pass

    # ---- other handles on the same data --------------------------------------------------------------------
    def test_reopened_handle_sees_objects_and_refs(self, store: Store) -> None:
        other = self.reopen(store)
        if other is None:
            pytest.skip("backend has no second handle on the same data (reopen() returned None)")
        try:
            store.put("chunks/aa/bb", b"payload")
            store.compare_and_swap("heads/main", None, "c1")
            assert other.get("chunks/aa/bb") == b"payload"
            assert other.get_ref("heads/main") == "c1"
            assert other.compare_and_swap("heads/main", "c1", "c2")
            assert store.get_ref("heads/main") == "c2"
            assert not other.compare_and_swap("heads/main", "c1", "c3")
        finally:
            other.close()

    def test_open_store_resolves_url_through_plugins(self, store: Store) -> None:
        url = self.url(store)
        if url is None:
            pytest.skip("no URL for this backend (url() returned None)")
        from ..store.registry import open_store

        other = open_store(url)
        try:
            assert type(other) is type(store)
            key = f"probe/{uuid.uuid4().hex}"
            store.put(key, b"seen through the URL")
            assert other.get(key) == b"seen through the URL"
        finally:
            other.close()
