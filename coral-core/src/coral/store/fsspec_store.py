"""A store on any fsspec filesystem (``fsspec+file:///path``, ``fsspec+memory://name``, ``gs://...``).

Objects live under ``objects/``, refs under ``refs/``, lock leases under ``locks/`` and staging records under
``staged/`` of the URL's folder. Refs change by the strongest means the filesystem has: a true conditional
write (S3), or a write under an exclusive lease; where neither exists a racing ref update is refused.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from ..errors import ConditionalWritesUnsupportedError, ObjectNotFoundError, PluginError, RefConflictError
from .base import Store, validate_key
from .fsspec_files import FsspecFiles
from .leases import LeaseLocks, lease_body, lease_expired

EXTRA_HINT = "pip install 'coral-core[s3]'"
#: seconds a ref update waits for another writer's update of the same ref (generic filesystems)
REF_LOCK_TIMEOUT = 60.0


def split_url(url: str) -> tuple[str, str]:
    """``("fsspec+gs", "bucket/prefix")`` from ``"fsspec+gs://bucket/prefix"``."""
    if not isinstance(url, str) or "://" not in url:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("url", url, "expected SCHEME://PATH")
    scheme, rest = url.split("://", 1)
    return scheme, rest


class FsspecStore(Store):
    """Objects and refs as files of an fsspec filesystem; locks and ref updates through lease objects."""

    scheme = "fsspec"
    ranged_reads = True

    def __init__(self, files: FsspecFiles, url: str) -> None:
        self.files = files
        self.url = url
        self.locks = LeaseLocks(files, url)
        self._staged: dict[str, list[str]] = {}
        self._staged_mutex = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> FsspecStore:
        scheme, rest = split_url(url)
        protocol = scheme[len("fsspec+") :] if scheme.startswith("fsspec+") else scheme
        try:
            import fsspec
        except ImportError:
            raise PluginError(f"opening {url!r} needs fsspec: {EXTRA_HINT}") from None
        try:
            fs, path = fsspec.core.url_to_fs(f"{protocol}://{rest}", skip_instance_cache=True)
        except ImportError as exc:  # fsspec names the package that serves the protocol
            raise PluginError(f"no fsspec filesystem for {protocol!r} in {url!r}: {exc}") from None
        except ValueError as exc:
            raise PluginError(f"no fsspec filesystem for {protocol!r} in {url!r}: {exc}") from None
        return cls(FsspecFiles(fs, path), url)

    def describe(self) -> str:
        return self.url

    # ---- objects -------------------------------------------------------------------------------------------
    @staticmethod
    def _okey(key: str) -> str:
        return f"objects/{validate_key(key)}"

    def _missing(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(f"object {key!r} not found in {self.url}")

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = False) -> bool:
        okey = self._okey(key)
        body = bytes(data)
        if overwrite:
            self.files.write(okey, body)
            return True
        if self.files.atomic_replace:  # a conditional create: the first writer's bytes are kept
            return self.files.create_only(okey, body) is not None
        if self.files.exists(okey):  # ids name content: a racing second writer writes the same bytes
            return False
        self.files.write(okey, body)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self.files.read(self._okey(key))
        except FileNotFoundError:
            raise self._missing(key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            return self.files.read_range(self._okey(key), start, length)
        except FileNotFoundError:
            raise self._missing(key) from None

    def get_into(self, key: str, start: int, out: memoryview) -> int:
        data = self.get_range(key, start, len(out))
        out[: len(data)] = data
        return len(data)

    def has(self, key: str) -> bool:
        return self.files.exists(self._okey(key))

    def size(self, key: str) -> int:
        try:
            return self.files.size(self._okey(key))
        except FileNotFoundError:
            raise self._missing(key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter([k[len("objects/") :] for k in self.files.list(f"objects/{prefix}")])

    def delete(self, key: str) -> None:
        self.files.delete(self._okey(key))

    # ---- refs (an empty ref file is a deleted ref: deleting by a conditional write needs no conditional
    # delete, which S3-compatible servers support less widely) ---------------------------------------------
    @staticmethod
    def _decode(data: bytes | None) -> str | None:
        return data.decode("utf-8", errors="replace") if data else None

    def get_ref(self, name: str) -> str | None:
        cur = self.files.read_versioned(f"refs/{validate_key(name, 'ref')}")
        return self._decode(cur.data if cur else None)

    def compare_and_swap(self, name: str, expected: str | None, new: str | None) -> bool:
        key = f"refs/{validate_key(name, 'ref')}"
        if self.files.atomic_replace:
            return self._cas_conditional(key, expected, new)
        if self.files.atomic_create:
            with self.locks.hold(f"ref-update/{name}", exclusive=True, timeout=REF_LOCK_TIMEOUT):
                return self._cas_plain(key, expected, new)
        return self._cas_guarded(name, key, expected, new)

    def _cas_conditional(self, key: str, expected: str | None, new: str | None) -> bool:
        body = new.encode("utf-8") if new is not None else b""
        for _attempt in range(1000):  # each lost round means another writer's update went through
            cur = self.files.read_versioned(key)
            if self._decode(cur.data if cur else None) != expected:
                return False
            if cur is None:
                if new is None:
                    return True
                if self.files.create_only(key, body) is not None:
                    return True
            elif self.files.replace_if(key, body, cur.token) is not None:
                return True
            # another writer changed it between our read and write: the next read decides
        raise RefConflictError(f"ref {key[len('refs/'):]!r} on {self.url} keeps changing under this update")

    def _cas_plain(self, key: str, expected: str | None, new: str | None) -> bool:
        cur = self.files.read_versioned(key)
        if self._decode(cur.data if cur else None) != expected:
            return False
        if new is None:
            if cur is not None:
                self.files.delete(key)
        else:
            self.files.write(key, new.encode("utf-8"))
        return True

    def _cas_guarded(self, name: str, key: str, expected: str | None, new: str | None) -> bool:
        """No conditional writes: announce the update, and refuse it when another writer announced one too."""
        base = f"locks/ref-guard/{name}"
        mine = f"{base}/{uuid.uuid4().hex}"
        self.files.write(mine, lease_body(mine, 60.0))
        try:
            others = self.files.read_many([k for k in self.files.list(f"{base}/") if k != mine])
            if any(not lease_expired(v) for v in others.values()):
                raise ConditionalWritesUnsupportedError(
                    f"ref {name!r} on {self.url}: another writer is updating it, and this server ignores "
                    "conditional writes (If-None-Match/If-Match), so the update was refused instead of racing; retry"
                )
            return self._cas_plain(key, expected, new)
        finally:
            self.files.delete(mine)

    def list_refs(self, prefix: str = "") -> dict[str, str]:
        found = self.files.read_many(list(self.files.list(f"refs/{prefix}")))
        out = {k[len("refs/") :]: self._decode(v) for k, v in found.items() if v}
        return {k: v for k, v in sorted(out.items()) if v is not None}

    # ---- coordination ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool = True, timeout: float = 600.0) -> Iterator[None]:
        with self.locks.hold(validate_key(name, "lock"), exclusive=exclusive, timeout=timeout):
            yield

    def _write_staged(self, token: str) -> None:
        with self._staged_mutex:
            ids = self._staged.get(token)
            if ids is not None:
                body = json.dumps({"expires": time.time() + self.locks.ttl, "ids": ids}).encode()
                self.files.write(f"staged/{token}", body)

    def hold_staged(self, token: str, chunk_ids: Iterable[str]) -> None:
        validate_key(token, "staging token")
        with self._staged_mutex:
            self._staged[token] = sorted(set(chunk_ids))
        self._write_staged(token)
        self.locks.heartbeat.add(f"staged/{token}", lambda: self._write_staged(token))

    def release_staged(self, token: str) -> None:
        self.locks.heartbeat.remove(f"staged/{token}")
        with self._staged_mutex:
            if self._staged.pop(token, None) is None:
                return
            self.files.delete(f"staged/{token}")

    def staged_elsewhere(self) -> set[str]:
        ids: set[str] = set()
        for key, data in self.files.read_many(list(self.files.list("staged/"))).items():
            try:
                record = json.loads(data)
                expired = float(record["expires"]) < time.time()
                held = [str(i) for i in record["ids"]]
            except (ValueError, KeyError, TypeError):
                continue
            if expired:
                self.files.delete(key)  # its writer died
            else:
                ids.update(held)
        return ids

    def close(self) -> None:
        for token in list(self._staged):
            self.release_staged(token)
        self.files.close()
