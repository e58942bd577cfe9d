"""The staging area: tensors written (deduplicated) and held for the next commit, kept alive against a gc."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import InvalidArgumentError, ObjectNotFoundError
from ..objects.tensors import ObjectStore, TensorEntry, chunk_key
from ..store.base import Store
from .names import validate_tensor_name


def normalize_weights(weights: Any) -> dict[str, WeightTensor]:
    """``{name: WeightTensor | ndarray}`` or an iterable of named WeightTensors, as ``{name: WeightTensor}``."""
    out: dict[str, WeightTensor] = {}
    if isinstance(weights, Mapping):
        pairs = list(weights.items())
    elif isinstance(weights, Iterable):
        pairs = [(getattr(w, "name", None), w) for w in weights]
    else:
        raise InvalidArgumentError("weights", type(weights).__name__, "expected a dict of name -> WeightTensor")
    for name, value in pairs:
        if not isinstance(name, str):
            raise InvalidArgumentError("weights", name, "tensor names must be strings")
        validate_tensor_name(name)
        if isinstance(value, WeightTensor):
            wt = value
            if wt.metadata.name != name:
                wt = WeightTensor(wt.data, WeightMetadata(name, wt.shape, wt.metadata.dtype, wt.metadata.layer_type))
        elif isinstance(value, np.ndarray) or np.isscalar(value):
            wt = WeightTensor(np.asarray(value), name=name)
        else:
            raise InvalidArgumentError(f"weights[{name!r}]", type(value).__name__, "expected a WeightTensor or ndarray")
        out[name] = wt
    return out


def check_tree_stored(store: Store, tree: Mapping[str, TensorEntry]) -> None:
    """A gc between stage_weights() and commit() may have freed staged chunks: never commit a dangling tree."""
    for name, entry in tree.items():
        for chunk in entry.chunks:
            if not store.has(chunk_key(chunk)):
                raise ObjectNotFoundError(
                    f"staged chunk {chunk} of tensor {name!r} is no longer in the store (a gc ran "
                    "between stage_weights() and commit()); stage the weights again"
                )


class StagingArea:
    """Tensors staged by one Repository handle; the store records their chunks so other processes' gc keeps them."""

    def __init__(self, store: Store, objects: ObjectStore) -> None:
        self.store = store
        self.objects = objects
        self.entries: dict[str, TensorEntry] = {}
        self.metadata: dict[str, WeightMetadata] = {}
        self.token = uuid.uuid4().hex  # names this handle's record of staged chunks in the store

    def stage(self, weights: Mapping[str, Any] | Iterable[WeightTensor]) -> dict[str, str]:
        items = normalize_weights(weights)
        arrays = [(name, wt.data) for name, wt in items.items()]
        with self.store.lock("gc", exclusive=False):
            entries, _written = self.objects.write_tensors(arrays)
            # until commit(), a gc in another process must keep these chunks (released on commit/close)
            kept = {**self.entries, **entries}
            self.store.hold_staged(self.token, (c for e in kept.values() for c in e.chunks))
        status = {}
        for name, entry in entries.items():
            entry.layer_type = items[name].metadata.layer_type
            status[name] = "stored"
            self.entries[name] = entry
            self.metadata[name] = items[name].metadata
        return status

    def chunks(self) -> set[str]:
        return {c for e in self.entries.values() for c in e.chunks}

    def clear(self) -> None:
        """Drop the staged tensors and the store's record of them."""
        self.entries.clear()
        self.metadata.clear()
        self.store.release_staged(self.token)
