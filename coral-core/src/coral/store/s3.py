"""The S3 store: ``s3://bucket/prefix`` through s3fs and boto3 (``pip install 'coral-core[s3]'``).

The endpoint, region and credentials come from where every AWS tool reads them (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws``); Coral adds no settings.
Opening makes no request: the first operation does, and fails in seconds with one line when the endpoint
is unreachable, the credentials are refused or the bucket is missing.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import InvalidArgumentError, PluginError
from .fsspec_store import EXTRA_HINT, FsspecStore, split_url
from .s3_files import CLIENT_CONFIG, S3Files

_LOADER_LOCK = threading.Lock()
_LOADER: list[Any] = []


def _sessions() -> tuple[Any, Any]:
    """A fresh boto3 session and aiobotocore session (each reads the environment anew) that share one botocore
    data loader: the service models are parsed once per process, so opening a store costs milliseconds, not
    the half second a clone or fetch would otherwise pay for each store it opens."""
    import boto3
    import botocore.loaders
    import botocore.session
    from aiobotocore.session import AioSession

    with _LOADER_LOCK:
        if not _LOADER:
            _LOADER.append(botocore.loaders.create_loader())
        loader = _LOADER[0]
    sync = botocore.session.get_session()
    sync.register_component("data_loader", loader)
    aio = AioSession()
    aio.register_component("data_loader", loader)
    return boto3.session.Session(botocore_session=sync), aio


class S3Store(FsspecStore):
    """A Coral store under ``s3://bucket/prefix``: refs by conditional writes, locks by leases, lazy reads."""

    scheme = "s3"

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        scheme, rest = split_url(url)
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not bucket:
            raise InvalidArgumentError("url", url, "expected s3://BUCKET[/PREFIX]")
        if scheme not in ("s3", "s3a"):
            raise InvalidArgumentError("url", url, "expected an s3:// URL")
        try:
            import aiobotocore  # noqa: F401 - s3fs's own dependency, named here so a broken install says so
            import boto3  # noqa: F401
            import s3fs
            from botocore.config import Config
        except ImportError as exc:
            raise PluginError(f"opening {url!r} needs s3fs and boto3 ({exc.name} is missing): {EXTRA_HINT}") from None
        if prefix:
            from .base import validate_key

            validate_key(prefix, "s3 prefix")
        session, aio_session = _sessions()
        client = session.client("s3", config=Config(**CLIENT_CONFIG))
        fs = s3fs.S3FileSystem(
            session=aio_session,
            skip_instance_cache=True,
            use_listings_cache=False,
            config_kwargs=dict(CLIENT_CONFIG),
        )
        fs.retries = 2  # s3fs's own retries of transient errors, on top of botocore's
        return cls(S3Files(fs, client, bucket, prefix, f"s3://{bucket}/{prefix}".rstrip("/")), url)

    @property
    def conditional_writes(self) -> bool:
        """True when the server honours ``If-None-Match``/``If-Match`` (probed at the first write)."""
        return self.files.atomic_replace
