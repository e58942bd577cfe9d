"""Orbax interop: import an Orbax PyTree/Standard checkpoint into a commit, export a commit that Orbax restores.

Both directions go through real ``orbax.checkpoint`` (imported only here, only when called), and arrays are
read as host numpy arrays, so the bits never pass through a dtype conversion.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from coral import Repository
from coral.errors import InvalidArgumentError, RefNotFoundError
from coral.version_control.jsonsafe import to_jsonable

from .commits import META_KEY, commit_arrays, load_pytree, open_repository
from .manager import RNG_PREFIX, register_step
from .pytree import escape_segment, flatten_pytree, key_path_name, unflatten_pytree

log = logging.getLogger(__name__)

_PYTREE_MARKERS = ("_METADATA", "checkpoint")
_STEP_DIR = re.compile(r"^(?:.*_)?(\d+)$")


def _is_pytree_dir(p: Path) -> bool:
    return p.is_dir() and any((p / m).is_file() for m in _PYTREE_MARKERS)


def _step_of(p: Path) -> int | None:
    m = _STEP_DIR.match(p.name)
    return int(m.group(1)) if m else None


def _locate(path: Path, step: int | None) -> tuple[Path, int | None]:
    """The checkpoint folder to read (a pytree folder or a step folder of items) and its step if known."""
    if not path.is_dir():
        raise InvalidArgumentError("path", str(path), "is not a folder")
    if _is_pytree_dir(path):
        return path, step  # a bare PyTree folder: its name says nothing reliable about a step
    if any(_is_pytree_dir(c) for c in path.iterdir() if c.is_dir()):
        return path, step if step is not None else _step_of(path)
    steps = {s: c for c in path.iterdir() if c.is_dir() and (s := _step_of(c)) is not None}
    if not steps:
        raise InvalidArgumentError(
            "path", str(path), "holds no Orbax checkpoint (no _METADATA, no step folders)"
        )
    chosen = max(steps) if step is None else step
    if chosen not in steps:
        raise RefNotFoundError(f"no step {chosen} under {path} (steps: {sorted(steps)})")
    return steps[chosen], chosen


def _read_pytree(ckptr: Any, path: Path) -> tuple[Any, dict[str, str]]:
    """Restore one Orbax PyTree checkpoint with every array as a host numpy array (exact bits), and the
    names of the leaves that were typed PRNG keys."""
    import orbax.checkpoint as ocp
    from etils import epath
    from orbax.checkpoint.metadata import ArrayMetadata, ScalarMetadata

    meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path))  # no step-level metadata lookup
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)

    def args_for(m: Any) -> Any:
        if isinstance(m, ArrayMetadata) and not isinstance(m, ScalarMetadata):
            return ocp.RestoreArgs(restore_type=np.ndarray)
        return ocp.RestoreArgs()

    restore_args = jax.tree_util.tree_map(args_for, tree)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return restored, _typed_key_paths(path, tree)


def _typed_key_paths(path: Path, meta_tree: Any) -> dict[str, str]:
    """``{leaf name: PRNG impl}`` for arrays Orbax saved from typed keys (read as their uint32 key data)."""
    impls: dict[str, str] = {}
    for f in (path / "array_metadatas").glob("process_*"):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for item in doc.get("array_metadatas", []):
            am = item.get("array_metadata") or {}
            impl = (am.get("ext_metadata") or {}).get("random_key_impl")
            if impl:
                impls[am.get("param_name")] = impl
    if not impls:
        return {}
    out = {}
    for kp, m in jax.tree_util.tree_flatten_with_path(meta_tree)[0]:
        if getattr(m, "name", None) in impls:
            out[key_path_name(kp)] = impls[m.name]
    return out


def _prefer_jax(skel: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Mark imported numpy leaves as jax arrays (what Orbax restores) where JAX holds the dtype exactly."""
    x64 = bool(jax.config.read("jax_enable_x64"))
    stack = [skel]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("t") == "array" and node.get("kind") == "numpy":
                dt = arrays[node["name"]].dtype
                if x64 or not (dt.itemsize == 8 and dt.kind in "iuf"):
                    node["kind"] = "jax"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _read_checkpoint(path: Path, step: int | None) -> tuple[Any, dict[str, str], Path, int | None]:
    import orbax.checkpoint as ocp

    folder, found_step = _locate(path.expanduser().resolve(), step)
    ckptr = ocp.PyTreeCheckpointer()
    if _is_pytree_dir(folder):
        tree, keys = _read_pytree(ckptr, folder)
        return tree, keys, folder, found_step
    items = {c.name: _read_pytree(ckptr, c) for c in sorted(folder.iterdir()) if _is_pytree_dir(c)}
    if list(items) == ["default"]:
        tree, keys = items["default"]
        return tree, keys, folder, found_step
    keys = {f"{escape_segment(n)}/{k}": impl for n, (_, ks) in items.items() for k, impl in ks.items()}
    return {n: t for n, (t, _) in items.items()}, keys, folder, found_step


def _mark_keys(skel: Any, keys: Mapping[str, str]) -> None:
    """Turn the uint32 leaves Orbax saved from typed keys back into typed-key leaves of the structure."""
    if not keys:
        return
    stack = [skel]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("t") == "array" and node.get("name") in keys:
                node.pop("kind", None)
                node.update({"t": "key", "impl": keys[node["name"]]})
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def read_orbax(path: str | os.PathLike[str], step: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an Orbax checkpoint as ``{key-path name: numpy array}`` (what ``coral import`` stores)."""
    return flatten_pytree(_read_checkpoint(Path(path), step)[0])[0]


def import_orbax(
    path: str | os.PathLike[str],
    repository: Repository | str | os.PathLike[str],
    *,
    step: int | None = None,
    name: str | None = None,
    message: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Commit an Orbax checkpoint into a Coral repository; returns the commit hash.

    ``path`` is a PyTree/Standard checkpoint folder, an Orbax CheckpointManager step folder (its items become
    top-level keys; a lone ``default`` item is unwrapped), or a CheckpointManager root (``step`` picks one,
    default the latest). When the step is known it is registered with ``CoralCheckpointManager(name=name)``,
    so ``restore(step)`` finds it. 64-bit arrays stay numpy unless ``jax_enable_x64`` is on.
    """
    repo = open_repository(repository)
    tree, keys, folder, found_step = _read_checkpoint(Path(path), step)
    metrics = _orbax_metrics(folder)
    arrays, structure = flatten_pytree(tree)
    _prefer_jax(structure, arrays)
    _mark_keys(structure, keys)
    manager = name or repo.current_branch or "default"
    info = {
        "source": "orbax",
        "step": found_step,
        "manager": manager if found_step is not None else None,
        "metrics": metrics,
    }
    meta = dict(metadata or {})
    if found_step is not None:
        meta.setdefault("step", found_step)
        meta.setdefault("global_step", found_step)
    if metrics is not None:
        meta.setdefault("metrics", metrics)
    msg = message or (
        f"Import Orbax step {found_step}"
        if found_step is not None
        else f"Import Orbax checkpoint {folder.name}"
    )
    cid = commit_arrays(repo, arrays, structure, msg, meta, info)
    if found_step is not None:
        register_step(repo, manager, found_step, cid, metrics)
    return cid


def _orbax_metrics(folder: Path) -> Any:
    """A CheckpointManager step's metrics: the ``metrics`` item (JSON) or the step metadata's ``metrics``."""
    metrics = None
    for candidate, key in (
        (folder / "metrics" / "metrics", None),
        (folder / "_CHECKPOINT_METADATA", "metrics"),
    ):
        try:
            doc = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        metrics = doc.get(key) if key and isinstance(doc, dict) else doc
        if metrics:
            break
    return to_jsonable(metrics, "metrics") if metrics else None


def export_orbax(
    repository: Repository | str | os.PathLike[str],
    ref: str | None,
    path: str | os.PathLike[str],
    *,
    items_like: Any = None,
    step: int | None = None,
    force: bool = False,
) -> Path:
    """Write a commit (default HEAD) as an Orbax checkpoint that ``orbax.checkpoint`` restores bit-exactly.

    Without ``step`` ``path`` becomes a Standard checkpoint folder (``StandardCheckpointer().restore(path)``);
    with ``step`` it is an Orbax CheckpointManager root and the commit is saved as that step. ``items_like``
    gives the exact classes and dtypes (see ``load_pytree``). Returns the folder written.
    """
    import orbax.checkpoint as ocp

    repo = open_repository(repository)
    tree = load_pytree(repo, ref, like=items_like)
    out = Path(path).expanduser().resolve()
    if step is None:
        return _write_standard(tree, out, force)
    mgr = ocp.CheckpointManager(out)
    try:
        mgr.save(int(step), args=ocp.args.StandardSave(tree), force=True)
        mgr.wait_until_finished()
    finally:
        mgr.close()
    return out / str(int(step))


def _write_standard(tree: Any, out: Path, force: bool) -> Path:
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    try:
        ckptr.save(out, tree, force=force)
        ckptr.wait_until_finished()
    finally:
        ckptr.close()
    return out


def write_orbax(weights: Mapping[str, Any], metadata: Mapping[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write ``{name: array}`` as a Standard checkpoint, nested by the stored structure when there is one."""
    info = (metadata or {}).get(META_KEY)
    structure = info.get("structure") if isinstance(info, dict) else None
    items = {n: w for n, w in weights.items() if n.split("/", 1)[0] != RNG_PREFIX}
    tree = unflatten_pytree(items, structure, as_numpy=structure is None)
    return _write_standard(tree, Path(out).expanduser().resolve(), False)


__all__ = ["export_orbax", "import_orbax", "read_orbax"]
