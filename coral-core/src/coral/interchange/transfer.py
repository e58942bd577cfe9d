"""Export a commit to a weights file and import one as a commit, one tensor in memory at a time.

Core reads and writes ``.safetensors`` itself; every other format goes through the plugin hooks
``coral_export`` (``--format hf``) and ``coral_import_file`` (``.pt``/``.bin`` via coral-torch, HF folders via
coral-hf). A format nobody handles is an error listing the formats the loaded plugins read, and naming a
package to install only when it is not installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ..errors import (
    CoralError,
    InvalidArgumentError,
    MalformedFileError,
    NothingChangedError,
    PluginError,
    PrunedCommitError,
)
from ..objects.manifest import PACK_MAX
from ..plugins import hook, list_plugins
from ..version_control.jsonsafe import canonical_dumps, from_jsonable, to_jsonable
from ..version_control.names import validate_tensor_name
from ..version_control.repository import Repository
from .safetensors_io import SafetensorsReader, TensorSpec, write_file

log = logging.getLogger(__name__)

#: ``progress(done_bytes, total_bytes)``, called after each tensor.
Progress = Callable[[int, int], None]

#: Which package to install for an export format core does not write itself.
_PACKAGE_FOR_FORMAT = {"hf": "coral-hf", "pt": "coral-torch", "torch": "coral-torch"}
#: What ``coral import`` reads, by the package that reads it (core's own first).
_IMPORT_FORMATS = (
    ("coral-core", ".safetensors files"),
    ("coral-torch", ".pt/.pth/.bin/.ckpt files (torch.save state dicts)"),
    ("coral-hf", "Hugging Face model folders (config.json + *.safetensors)"),
)


def _normal(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _package_status(package: str) -> str:
    """``"loaded"`` (its plugin is registered), ``"not loaded"`` (installed, plugin off) or ``"missing"``."""
    if package == "coral-core" or any(
        p.distribution and _normal(p.distribution) == package for p in list_plugins()
    ):
        return "loaded"
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
    return "not loaded"


def _unrecognised(p: Path) -> str:
    """Why nothing imported ``p``: what the loaded plugins read, and what another package would add."""
    what = "folder" if p.is_dir() else "file"
    supported, more = [], []
    for package, formats in _IMPORT_FORMATS:
        status = _package_status(package)
        if status == "loaded":
            supported.append(formats if package == "coral-core" else f"{formats} via {package}")
        elif status == "not loaded":
            more.append(
                f"{formats} need {package}, installed but its plugin is not loaded (see CORAL_PLUGINS)"
            )
        else:
            more.append(f"{formats} need pip install {package}")
    known = {package for package, _ in _IMPORT_FORMATS}
    others = sorted(
        pl.name
        for pl in list_plugins()
        if "coral_import_file" in pl.hooks and _normal(pl.distribution or pl.name) not in known
    )
    supported += [f"what plugin {name!r} reads" for name in others]
    message = f"no installed plugin recognises the {what} {p}; supported: {', '.join(supported)}"
    return message + "".join(f"; {m}" for m in more)


class LazyArrays(Mapping[str, np.ndarray]):
    """``{name: ndarray}`` over a commit that reads a tensor only when asked and keeps none in memory.

    Handed to ``coral_export`` plugins so that iterating a large model never holds more than one tensor.
    """

    def __init__(self, repo: Repository, commit: str, names: Iterable[str]) -> None:
        self._repo, self._commit, self._names = repo, commit, list(names)
        self._tree = repo.get_commit(commit).tree
        self._known = set(self._names) & set(self._tree)
        self._read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._known:
            raise KeyError(name)
        self._read.add(name)
        return self._repo.objects.read_tensor(name, self._tree[name])

    def read_names(self) -> list[str]:
        """The names read so far, in this mapping's order (what an exporting plugin actually wrote)."""
        return [n for n in self._names if n in self._read]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def spec(self, name: str) -> TensorSpec:
        entry = self._tree[name]
        return TensorSpec(name, entry.dtype, tuple(entry.shape))


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the path, the tensors written with their bytes, and the selected tensors the
    format left out (a plugin may skip some, e.g. coral-hf's ``hf`` format skips ``optim/``, ``rng/``)."""

    path: str
    names: list[str]
    nbytes: int
    left_out: list[str]


def export_commit(
    repo: Repository,
    ref: str | None,
    out: str | os.PathLike[str],
    format: str = "safetensors",
    *,
    names: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> str:
    """Write the tensors of commit ``ref`` (default HEAD) to ``out``; returns the written path.

    ``format="safetensors"`` is handled by core; any other format is offered to plugins (``coral_export``).
    ``names`` restricts the export to some tensors (e.g. leave out ``optim/...``). An existing folder as
    ``out`` receives ``model.safetensors``.
    """
    return export_commit_report(repo, ref, out, format, names=names, progress=progress).path


def export_commit_report(
    repo: Repository,
    ref: str | None,
    out: str | os.PathLike[str],
    format: str = "safetensors",
    *,
    names: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """:func:`export_commit`, reporting which tensors were written: for a plugin's format, the ones it read."""
    commit_id = repo.resolve(ref)
    commit = repo.get_commit(commit_id)
    if repo.is_pruned(commit_id):
        raise PrunedCommitError(
            f"commit {commit_id[:12]} was pruned: its weights were freed, nothing to export"
        )
    selected = sorted(commit.tree) if names is None else list(names)
    check_export_destination(out, format)
    arrays = LazyArrays(repo, commit_id, selected)
    missing = [n for n in selected if n not in commit.tree]
    if missing:
        raise CoralError(f"tensor(s) {missing} not in commit {commit_id[:12]}")
    # shards of a torch.distributed.checkpoint save: the plugin that wrote them consolidates them
    sharded = "dcp" in commit.metadata
    if format == "safetensors" and not sharded:
        if Path(out).is_dir():
            out = Path(out) / "model.safetensors"
        header_meta = {
            "format": "pt",  # what transformers' from_pretrained expects; the bytes are framework-neutral
            "coral.commit": commit_id,
            "coral.message": commit.message,
            "coral.metadata": canonical_dumps(to_jsonable(commit.metadata)).decode(),
        }
        specs = [arrays.spec(n) for n in selected]
        total = sum(s.nbytes for s in specs)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        try:
            path = write_file(out, specs, arrays.__getitem__, header_meta, advance)
        except OSError as exc:  # never the temp file's name: the user's path and the reason
            raise InvalidArgumentError("out", os.fspath(out), f"cannot write there: {_reason(exc)}") from None
        return ExportReport(str(path), selected, total, [])
    # plugins get the commit's own metadata (coral-hf finds the model config there)
    try:
        written = hook().coral_export(
            weights=arrays, metadata=dict(commit.metadata), out=os.fspath(out), format=format
        )
    except OSError as exc:
        raise InvalidArgumentError("out", os.fspath(out), f"cannot write there: {_reason(exc)}") from None
    if written is None:
        package = _PACKAGE_FOR_FORMAT.get(format)
        hint = f" (pip install {package})" if package else ""
        raise PluginError(f"no installed plugin exports format {format!r}{hint}; core writes 'safetensors'")
    done_names = arrays.read_names()
    if not done_names:  # the plugin read the commit some other way: it cannot be told what it wrote
        done_names = selected
    kept = set(done_names)
    return ExportReport(
        str(written),
        done_names,
        sum(commit.tree[n].nbytes for n in done_names),
        [n for n in selected if n not in kept],
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_export_destination(out: str | os.PathLike[str], format: str) -> None:
    """Refuse, in one line naming ``out`` and before anything is written, a destination that cannot be written:
    a parent that is a file, a folder that is not writable, or a file where a folder format (hf, orbax) goes."""
    target = Path(out).expanduser()
    if format != "safetensors" and target.exists() and not target.is_dir():
        raise InvalidArgumentError("out", os.fspath(out), f"is a file; --format {format} writes a folder there")
    ancestor = target if target.is_dir() else target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidArgumentError("out", os.fspath(out), f"{ancestor} is a file, not a folder")
    try:  # a real probe: permissions, read-only file systems and root all answer truthfully
        fd, probe = tempfile.mkstemp(prefix=".coral-export-probe-", dir=ancestor)
    except OSError as exc:
        raise InvalidArgumentError("out", os.fspath(out), f"{ancestor} is not writable ({_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)


@dataclass
class WeightsFile:
    """A weights file opened for import: its format, header metadata, and tensors yielded one at a time."""

    path: Path
    format: str
    metadata: dict[str, str]
    total_bytes: int
    names: list[str]
    _items: Callable[[], Iterator[tuple[str, np.ndarray]]] = field(repr=False)
    _close: Callable[[], None] = field(default=lambda: None, repr=False)
    #: what the import commit should record besides ``import`` (a plugin's ``.metadata``, or the metadata of
    #: the commit a Coral-written safetensors file came from)
    commit_metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        return self._items()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> "WeightsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_weights_file(path: str | os.PathLike[str]) -> WeightsFile:
    """Open ``.safetensors`` (core) or anything a plugin's ``coral_import_file`` reads (``.pt``, HF folders).

    Raises PluginError naming the package to install when no plugin reads the file.
    """
    p = Path(path)
    if not p.exists():
        raise CoralError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix.lower() == ".safetensors":
        reader = SafetensorsReader(p)
        return WeightsFile(
            p,
            "safetensors",
            dict(reader.metadata),
            sum(t.nbytes for t in reader.tensors.values()),
            reader.names(),
            reader.__iter__,
            reader.close,
            _coral_metadata(p, reader.metadata),
        )
    arrays = hook().coral_import_file(path=os.fspath(p))
    if arrays is None:
        raise PluginError(_unrecognised(p))
    if not isinstance(arrays, Mapping) or not arrays:
        raise MalformedFileError(f"{p}: the importing plugin found no tensors")
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise PluginError(
                f"the plugin importing {p} returned {type(value).__name__} for {name!r}, not an ndarray"
            )
    fmt = "directory" if p.is_dir() else p.suffix.lower().lstrip(".") or "file"
    # a plugin may return a dict subclass whose ``.metadata`` the commit should record (coral-hf: the config)
    extra = getattr(arrays, "metadata", None)
    return WeightsFile(
        p,
        fmt,
        {},
        sum(int(a.nbytes) for a in arrays.values()),
        list(arrays),
        lambda: iter(arrays.items()),
        commit_metadata=dict(extra) if isinstance(extra, Mapping) else {},
    )


def import_file(
    repo: Repository,
    path: str | os.PathLike[str],
    message: str | None = None,
    *,
    progress: Progress | None = None,
    allow_empty: bool = False,
) -> str:
    """Stage every tensor of a weights file (one at a time) and commit them; returns the commit hash.

    A file Coral exported keeps its commit metadata (plus an ``import`` entry naming the source), so an
    export/import round trip reproduces the same tree: every chunk deduplicates against the original.
    A file whose tensors are exactly HEAD's raises :class:`NothingChangedError` unless ``allow_empty=True``.
    """
    if repo.staged:
        raise CoralError(
            f"{len(repo.staged)} tensor(s) are already staged; commit them before importing a file"
        )
    with open_weights_file(path) as wf:
        for name in wf.names:
            validate_tensor_name(name)
        done = 0
        small: dict[str, np.ndarray] = {}  # staged together, as a save does, so they share packs as it did
        for name, array in wf:
            if 0 < array.nbytes <= PACK_MAX:
                small[name] = array
            else:
                repo.stage_weights({name: array})
            done += int(array.nbytes)
            del array
            if progress is not None:
                progress(done, wf.total_bytes)
        if small:
            repo.stage_weights(small)
        metadata = dict(wf.commit_metadata)
        metadata["import"] = {"source": wf.path.name, "format": wf.format}
        if "coral.commit" in wf.metadata:
            metadata["import"]["commit"] = wf.metadata["coral.commit"]
        ours = "coral.commit" in wf.metadata  # then "format": "pt" is the marker Coral wrote itself
        extra = {
            k: v
            for k, v in wf.metadata.items()
            if not k.startswith("coral.") and not (ours and k == "format")
        }
        if extra:
            metadata["import"]["file_metadata"] = extra
    head = repo.head_commit()
    if head is not None and not allow_empty:
        tree = repo.get_commit(head).tree
        staged = repo.staging.entries
        if tree.keys() == staged.keys() and all(tree[n].identity == e.identity for n, e in staged.items()):
            repo.staging.clear()
            raise NothingChangedError(
                f"Nothing changed: {wf.path.name} holds exactly the tensors of HEAD ({head[:8]}); "
                "no commit made (--allow-empty commits it anyway)"
            )
    return repo.commit(message or f"Import {wf.path.name}", metadata)


def _coral_metadata(path: Path, header: Mapping[str, str]) -> dict[str, Any]:
    """The commit metadata a Coral export recorded in ``__metadata__["coral.metadata"]`` (else empty)."""
    raw = header.get("coral.metadata")
    if raw is None:
        return {}
    try:
        value = from_jsonable(json.loads(raw))
    except ValueError:
        log.warning("%s: ignoring unreadable coral.metadata", path)
        return {}
    return dict(value) if isinstance(value, dict) else {}
