"""S3 files: reads and listings through s3fs, conditional writes and ranged reads through boto3.

``create_only`` is ``PutObject`` with ``If-None-Match: *`` and ``replace_if`` is ``PutObject`` with
``If-Match: <etag>``: a real compare-and-swap. Servers that ignore those headers exist, so the first write
probes: it creates an object twice with ``If-None-Match: *`` and expects the second to fail (412). If it does
not, the server is marked as without conditional writes and ref updates fall back to refusing races.
Every network error is translated into one line naming the URL and the endpoint.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import StoreUnavailableError
from .fsspec_files import FsspecFiles, Versioned

log = logging.getLogger(__name__)

T = TypeVar("T")

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "AllAccessDisabled",
}
#: timeouts and retries of every request: an unreachable endpoint fails in seconds, not minutes
CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
    "max_pool_connections": 32,
}


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(err.get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")) if isinstance(response, dict) else ""
    return code or status


class S3Files(FsspecFiles):
    """The files under ``s3://bucket/prefix``; ``fs`` is an ``s3fs.S3FileSystem``, ``client`` a boto3 S3 client."""

    def __init__(self, fs: Any, client: Any, bucket: str, prefix: str, url: str) -> None:
        super().__init__(fs, f"{bucket}/{prefix}" if prefix else bucket)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.url = url
        self._probe_mutex = threading.Lock()
        self._conditional: bool | None = None

    @property
    def endpoint(self) -> str:
        return str(getattr(self.client.meta, "endpoint_url", "") or "the default AWS endpoint")

    def s3key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- error translation ---------------------------------------------------------------------------------
    def translate(self, exc: BaseException) -> BaseException:
        """The Coral error for a network/S3 error (or ``exc`` itself when it is not one)."""
        from botocore.exceptions import (
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        where = f"{self.url} (endpoint {self.endpoint})"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreUnavailableError(
                f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return StoreUnavailableError(f"{where}: cannot reach the endpoint ({exc}); check AWS_ENDPOINT_URL")
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _DENIED:
                return StoreUnavailableError(
                    f"{where}: credentials refused ({code}); "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                )
            if code == "NoSuchBucket":
                return StoreUnavailableError(f"{where}: bucket {self.bucket!r} does not exist")
            return StoreUnavailableError(f"{where}: {code or 'error'}: {exc}")
        if isinstance(exc, PermissionError):
            return StoreUnavailableError(f"{where}: credentials refused ({exc})")
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and "ClientConnector" in repr(exc):
            return StoreUnavailableError(f"{where}: cannot reach the endpoint ({exc}); check AWS_ENDPOINT_URL")
        return exc

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
            new = self.translate(exc)
            if new is exc:
                raise
            raise new from None

    # ---- plain operations (s3fs) -----------------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        return self._get(key)[0]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """One ranged GET (no size request first); past the end gives b""."""
        if length <= 0:
            self.size(key)
            return b""
        return self._get(key, f"bytes={start}-{start + length - 1}")[0]

    def size(self, key: str) -> int:
        return self._call(lambda: super(S3Files, self).size(key))

    def exists(self, key: str) -> bool:
        return self._call(lambda: super(S3Files, self).exists(key))

    def write(self, key: str, data: bytes) -> None:
        self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=self.s3key(key), Body=data))

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=self.s3key(key)))

    def list(self, prefix: str = "") -> Iterator[str]:
        def run() -> list[str]:
            try:
                found = self.fs.find(self.path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root)
            except FileNotFoundError:
                return []
            return sorted(k for k in (self.key_of(p) for p in found) if k.startswith(prefix))

        return iter(self._call(run))

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        return self._call(lambda: super(S3Files, self).read_many(keys))

    # ---- conditional operations (boto3) ---------------------------------------------------------------------
    def _get(self, key: str, byte_range: str | None = None) -> tuple[bytes, str]:
        """GET an object (or a byte range of it): its bytes and ETag; FileNotFoundError when absent."""
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.s3key(key)}
        if byte_range:
            args["Range"] = byte_range
        try:
            resp = self.client.get_object(**args)
            return resp["Body"].read(), str(resp.get("ETag", ""))
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            if byte_range and code in ("InvalidRange", "416"):  # starts past the end of an existing object
                return b"", ""
            raise self.translate(exc) from None
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
            new = self.translate(exc)
            if new is exc:
                raise
            raise new from None

    def read_versioned(self, key: str) -> Versioned | None:
        try:
            data, etag = self._get(key)
        except FileNotFoundError:
            return None
        return Versioned(data, etag)

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self.s3key(key), Body=data, **condition)
        except ClientError as exc:
            if _code(exc) in _PRECONDITION:
                return None
            raise self.translate(exc) from None
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
            new = self.translate(exc)
            if new is exc:
                raise
            raise new from None
        return str(resp.get("ETag", ""))

    def create_only(self, key: str, data: bytes) -> str | None:
        if not self.conditional_writes():
            if self.exists(key):
                return None
            self.write(key, data)
            return self.read_versioned(key).token if self.exists(key) else None  # type: ignore[union-attr]
        return self._conditional_put(key, data, IfNoneMatch="*")

    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        if not self.conditional_writes():
            return super().replace_if(key, data, token)
        return self._conditional_put(key, data, IfMatch=token)

    @property
    def atomic_replace(self) -> bool:  # type: ignore[override]
        return self.conditional_writes()

    @property
    def atomic_create(self) -> bool:
        return self.conditional_writes()

    def conditional_writes(self) -> bool:
        """Does this server honour If-None-Match/If-Match on PutObject? Probed once, at the first write."""
        with self._probe_mutex:
            if self._conditional is None:
                self._conditional = self._probe()
                if not self._conditional:
                    log.warning(
                        "%s (endpoint %s) ignores conditional writes: concurrent ref updates will be refused",
                        self.url,
                        self.endpoint,
                    )
            return self._conditional

    def _probe(self) -> bool:
        from botocore.exceptions import ClientError

        key = f"locks/.probe-{uuid.uuid4().hex}"
        try:
            if self._conditional_put(key, b"probe", IfNoneMatch="*") is None:
                return False  # a fresh key refused: the header is misread
            if self._conditional_put(key, b"probe again", IfNoneMatch="*") is not None:
                return False  # the second create was accepted: If-None-Match ignored
            return self._conditional_put(key, b"probe", IfMatch='"00000000000000000000000000000000"') is None
        except ClientError as exc:  # NotImplemented / InvalidArgument: no conditional writes here
            log.debug("conditional-write probe failed: %s", exc)
            return False
        finally:
            self.delete(key)

    def describe(self) -> str:
        return self.url

