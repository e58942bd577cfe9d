"""HF model folders (``config.json`` + ``model.safetensors``, sharded or not) to and from Coral weights, bit-exact.

The safetensors bytes are read and written by core's streaming reader/writer (``coral.interchange``), one
tensor in memory at a time; pickle files (``pytorch_model.bin``) are refused, never loaded.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from coral.core.dtypes import dtype_name
from coral.errors import InvalidArgumentError, MalformedFileError
from coral.interchange import SafetensorsReader, TensorSpec, write_file
from coral.store import atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
STATE_ROOTS = ("optim", "sched", "rng", "data")  # training state inside checkpoint commits, not model weights


def model_config_from_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The HF model config recorded in a commit's metadata (by CoralTrainerCallback or an HF-folder import)."""
    hf = (metadata or {}).get("hf")
    cfg = hf.get("model_config") if isinstance(hf, Mapping) else None
    return dict(cfg) if isinstance(cfg, Mapping) else None


def _spec(weights: Mapping[str, Any], name: str) -> TensorSpec:
    spec = getattr(weights, "spec", None)  # coral.interchange.LazyArrays knows it without reading the tensor
    if callable(spec):
        return spec(name)
    a = _array(weights[name])
    return TensorSpec(name, dtype_name(a.dtype), tuple(a.shape))


def _array(value: Any) -> np.ndarray:
    return value.data if hasattr(value, "metadata") and hasattr(value, "data") else np.asarray(value)


def write_config(folder: str | os.PathLike[str], model_config: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Write ``folder/config.json`` atomically (whole or not at all; fsynced unless ``fsync=False``)."""
    atomic_write(
        Path(folder) / CONFIG_NAME, json.dumps(dict(model_config), indent=2, sort_keys=True) + "\n", fsync=fsync
    )


def export_hf_folder(
    weights: Mapping[str, Any], model_config: Mapping[str, Any], out: str | os.PathLike[str]
) -> str:
    """Write ``out/model.safetensors`` and ``out/config.json`` so ``AutoModel*.from_pretrained(out)`` loads them.

    Training state that checkpoint commits carry (``optim/``, ``sched/``, ``rng/``, ``data/``) is left out.
    """
    if not isinstance(model_config, Mapping) or not model_config.get("model_type"):
        raise InvalidArgumentError(
            "model_config", model_config, "an HF config dict with a 'model_type' is needed"
        )
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(
            "out", str(target), "exists and is not a folder (the hf format writes a folder)"
        )
    stale = [n for n in (INDEX_NAME, *PICKLE_NAMES) if (target / n).exists()]
    if stale:
        raise InvalidArgumentError(
            "out",
            str(target),
            f"already holds {stale[0]}, which from_pretrained would mix in: use an empty folder",
        )
    names = sorted(n for n in weights if n.split("/", 1)[0] not in STATE_ROOTS)
    if not names:
        raise InvalidArgumentError("weights", sorted(weights)[:5], "no model tensors to export")
    target.mkdir(parents=True, exist_ok=True)
    write_file(
        target / WEIGHTS_NAME,
        [_spec(weights, n) for n in names],
        lambda n: _array(weights[n]),
        {"format": "pt"},
    )
    write_config(target, model_config)
    return str(target)


def is_hf_folder(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file()


class ImportedWeights(Mapping[str, np.ndarray]):
    """The tensors of an HF folder, read one at a time on access; ``.metadata`` is what the import commit should
    record (``{"hf": {"model_config": {...}}}``), so ``coral import`` keeps the config with the weights."""

    def __init__(self, readers: dict[str, SafetensorsReader], metadata: dict[str, Any]) -> None:
        self._readers = readers  # tensor name -> the open shard that holds it
        self.metadata = metadata
        self._finalizer = weakref.finalize(
            self, _close_all, list({id(r): r for r in readers.values()}.values())
        )

    def __getitem__(self, name: str) -> np.ndarray:
        return self._readers[name].read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    def close(self) -> None:
        self._finalizer()


def _close_all(readers: list[SafetensorsReader]) -> None:
    for r in readers:
        r.close()


def open_hf_folder(path: str | os.PathLike[str]) -> ImportedWeights:
    """Open an HF folder for import: headers are validated now, tensors are read when asked for."""
    p = Path(path)
    if not is_hf_folder(p):
        raise InvalidArgumentError("path", str(p), f"is not an HF model folder (no {CONFIG_NAME})")
    try:
        config = json.loads((p / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MalformedFileError(f"{p / CONFIG_NAME}: unreadable config ({exc})") from None
    if not isinstance(config, dict):
        raise MalformedFileError(f"{p / CONFIG_NAME}: not a JSON object")
    if (p / WEIGHTS_NAME).is_file():
        shards = {WEIGHTS_NAME: None}
    elif (p / INDEX_NAME).is_file():
        shards = _weight_map(p)
    elif any((p / n).exists() for n in PICKLE_NAMES):
        raise MalformedFileError(
            f"{p} holds pickle weights ({PICKLE_NAMES[0]}), which Coral never unpickles: re-save it with "
            "model.save_pretrained(folder) (safetensors is the default) and import that folder"
        )
    else:
        raise InvalidArgumentError("path", str(p), f"has {CONFIG_NAME} but no {WEIGHTS_NAME} or {INDEX_NAME}")
    readers: dict[str, SafetensorsReader] = {}
    opened: list[SafetensorsReader] = []
    try:
        for shard, listed in shards.items():
            reader = SafetensorsReader(p / shard)
            opened.append(reader)
            if listed is not None and sorted(reader.tensors) != sorted(listed):
                raise MalformedFileError(f"{p / shard}: its tensors do not match {INDEX_NAME}'s weight_map")
            for name in reader.names():
                if name in readers:
                    raise MalformedFileError(f"{p}: tensor {name!r} appears in two shards")
                readers[name] = reader
    except BaseException:
        _close_all(opened)
        raise
    return ImportedWeights(readers, {"hf": {"model_config": config}})


def _weight_map(p: Path) -> dict[str, list[str]]:
    try:
        weight_map = json.loads((p / INDEX_NAME).read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MalformedFileError(f"{p / INDEX_NAME}: unreadable shard index ({exc})") from None
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not (p / shard).is_file():
            raise MalformedFileError(
                f"{p / INDEX_NAME}: shard {shard!r} of {name!r} is not a file in the folder"
            )
        shards.setdefault(shard, []).append(name)
    return dict(sorted(shards.items()))


def read_hf_folder(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return ``({name: ndarray}, model_config)`` from an HF folder (every tensor read, bit-exact)."""
    weights = open_hf_folder(path)
    try:
        return {n: weights[n] for n in weights}, weights.metadata["hf"]["model_config"]
    finally:
        weights.close()
