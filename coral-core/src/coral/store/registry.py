"""Resolve a store URL (``file://``, ``memory://``, ``s3://`` ...) to a backend through the plugin hook."""

from __future__ import annotations

from ..errors import InvalidArgumentError, PluginError
from .base import Store

# packages that provide well-known schemes, named in the error when the scheme is missing
_KNOWN = {
    "s3": "'coral-core[s3]'",
    "gs": "'coral-core[s3]' gcsfs",
    "fsspec": "'coral-core[s3]' and the fsspec filesystem package that serves this protocol",
}


def storage_backends() -> dict[str, type]:
    """Every URL scheme the installed plugins serve, mapped to its Store class."""
    from ..plugins import get_plugin_manager

    found: dict[str, type] = {}

    def register(scheme: str, cls: type) -> None:
        if not isinstance(cls, type) or not issubclass(cls, Store):
            raise PluginError(f"storage backend for scheme {scheme!r} is not a coral Store subclass: {cls!r}")
        found.setdefault(scheme, cls)

    get_plugin_manager().hook.coral_storage_backends(register=register)
    return found


def open_store(url: str) -> Store:
    """Open the store for ``url``; a bare path means ``file://``."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError("url", url, "expected a store URL or path")
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    backends = storage_backends()
    if scheme not in backends:
        hint = _KNOWN.get(
            scheme.split("+")[0],
            f"a package that registers the {scheme!r} scheme (fsspec filesystems: 'coral-core[s3]', then "
            f"fsspec+{scheme}://)",
        )
        raise PluginError(f"no storage backend for URL scheme {scheme!r} (in {url!r}); pip install {hint}")
    return backends[scheme].from_url(url)
