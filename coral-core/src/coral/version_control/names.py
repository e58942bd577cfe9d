"""Name rules for branches, tags and tensors: nothing that could escape the repository or confuse refs."""

from __future__ import annotations

import re

from ..errors import InvalidNameError

_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")


def validate_ref_name(name: str, what: str = "branch") -> str:
    """Branch/tag names: letters, digits, ``._-`` and ``/``; no ``..``, no leading ``/`` or ``-``, no NUL."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidNameError(what, name, "must be a non-empty string of at most 200 characters")
    if (
        "\x00" in name
        or ".." in name
        or name.startswith("/")
        or name.endswith((".", ".lock"))
        or not _REF.fullmatch(name)
    ):
        raise InvalidNameError(what, name, "use letters, digits, '.', '_', '-' and '/'; no '..' or leading '/'")
    if name == "HEAD" or re.search(r"[~^]", name):
        raise InvalidNameError(what, name, "reserved name")
    return name


def validate_tensor_name(name: str) -> str:
    """Tensor names are free-form (``layer.0.weight``, ``optim/state/0/exp_avg``) but never path escapes."""
    if not isinstance(name, str) or not name or len(name) > 1000:
        raise InvalidNameError("tensor name", name, "must be a non-empty string of at most 1000 characters")
    if "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise InvalidNameError("tensor name", name, "absolute paths and NUL are not allowed")
    if any(part == ".." for part in re.split(r"[\\/]", name)):
        raise InvalidNameError("tensor name", name, "'..' path components are not allowed")
    return name
