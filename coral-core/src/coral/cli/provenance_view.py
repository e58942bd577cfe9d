"""Provenance for people: the block ``coral show`` prints, and what changed between two commits' configs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..training.provenance import read_provenance

_ORDER = ("hparams", "versions", "device", "git", "host", "platform", "command", "cwd")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"hparams": {"lr": 0.1}}`` -> ``{"hparams.lr": 0.1}``; lists stay values."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value} if prefix else {}


def config_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A commit's hyperparameters and environment as flat dotted keys (empty for commits without provenance)."""
    prov = read_provenance(metadata) or {}
    ordered = {k: prov[k] for k in _ORDER if k in prov} | {k: v for k, v in prov.items() if k not in _ORDER}
    return flatten(ordered)


def hparams_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A commit's hyperparameters only, flat (``optimizer.lr``, ``batch_size``...)."""
    prov = read_provenance(metadata) or {}
    return flatten(prov.get("hparams") or {})


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``{"changed": {key: [a, b]}, "added": {key: b}, "removed": {key: a}, "identical": bool}`` of two
    commits' metadata (hyperparameters and environment)."""
    ca, cb = config_of(a), config_of(b)
    changed = {k: [ca[k], cb[k]] for k in ca if k in cb and ca[k] != cb[k]}
    added = {k: cb[k] for k in cb if k not in ca}
    removed = {k: ca[k] for k in ca if k not in cb}
    return {
        "changed": changed,
        "added": added,
        "removed": removed,
        "identical": not (changed or added or removed),
        "recorded": [bool(read_provenance(a)), bool(read_provenance(b))],
    }


def show_value(value: Any) -> str:
    """Readable scalar: lists joined, booleans lower-case, long text cut."""
    if isinstance(value, list):
        text = " ".join(show_value(v) for v in value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def provenance_lines(metadata: Mapping[str, Any]) -> list[str]:
    """The ``Provenance:`` block of ``coral show``; empty when the commit records none."""
    prov = read_provenance(metadata)
    if not prov:
        return []
    lines: list[str] = []
    git = prov.get("git")
    if isinstance(git, Mapping) and git.get("commit"):
        dirty = " (dirty: uncommitted changes)" if git.get("dirty") else ""
        branch = f" on {git['branch']}" if git.get("branch") else ""
        lines.append(f"code:      {git['commit'][:12]}{branch}{dirty}  {git.get('root', '')}".rstrip())
    else:
        lines.append("code:      not in a git work tree")
    if prov.get("command"):
        lines.append(f"command:   {show_value(prov['command'])}")
    if prov.get("host"):
        lines.append(f"host:      {prov['host']}" + (f" ({prov['platform']})" if prov.get("platform") else ""))
    device = prov.get("device")
    if isinstance(device, Mapping):
        count = device.get("count")
        name = device.get("name") or device.get("type") or "?"
        kind = str(device.get("type") or "").upper()
        lines.append(f"device:    {kind + ' ' if kind else ''}{name}" + (f" x{count}" if count else ""))
    versions = prov.get("versions")
    if isinstance(versions, Mapping) and versions:
        lines.append("versions:  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    hparams = flatten(prov.get("hparams") or {})
    if hparams:
        lines.append("hparams:")
        width = max(len(k) for k in hparams)
        lines.extend(f"  {k.ljust(width)}  {show_value(v)}" for k, v in hparams.items())
    return lines
