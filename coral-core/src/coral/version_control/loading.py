"""Loading a commit's tensors: lazy WeightTensors, or eager numpy arrays (read in parallel, or memory-mapped)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np

from ..core.weight_tensor import WeightMetadata, WeightTensor
from ..errors import AllocationError, InvalidArgumentError, PrunedCommitError, RefNotFoundError
from ..objects.tensors import ObjectStore, TensorEntry
from .history import History

T = TypeVar("T")


def allocating(tree: Mapping[str, TensorEntry], read: Callable[[], T]) -> T:
    """Run ``read``; a MemoryError (a manifest claiming more bytes than can be allocated) names the tensors."""
    try:
        return read()
    except MemoryError:
        big = max(tree.items(), key=lambda kv: kv[1].nbytes)
        raise AllocationError(
            f"cannot allocate {sum(e.nbytes for e in tree.values())} bytes to load {len(tree)} tensor(s) "
            f"(largest {big[0]!r}: shape {big[1].shape}, {big[1].dtype}); the manifest may be damaged or hostile"
        ) from None


class Loader:
    """Reads the tensors of resolved commits from the object store."""

    def __init__(self, objects: ObjectStore, history: History) -> None:
        self.objects = objects
        self.history = history

    def selected_tree(self, cid: str, names: Iterable[str] | None) -> dict[str, TensorEntry]:
        """The tree of commit ``cid``, narrowed to ``names``; a pruned commit or a missing name is refused."""
        if self.history.is_pruned(cid):
            raise PrunedCommitError(f"commit {cid[:12]} was pruned: its weights were freed (log still shows it)")
        tree = self.history.read_commit(cid).tree
        if names is not None:
            wanted = list(names) if not isinstance(names, str) else [names]
            missing = [n for n in wanted if n not in tree]
            if missing:
                raise RefNotFoundError(f"tensor(s) {missing} not in commit {cid[:12]}")
            tree = {n: tree[n] for n in wanted}
        return tree

    def lazy(self, tree: Mapping[str, TensorEntry]) -> dict[str, WeightTensor]:
        return {name: self._lazy(name, entry) for name, entry in tree.items()}

    def _lazy(self, name: str, entry: TensorEntry) -> WeightTensor:
        meta = WeightMetadata(name, entry.shape, entry.dtype, layer_type=entry.layer_type)
        return WeightTensor(
            metadata=meta, loader=lambda: allocating({name: entry}, lambda: self.objects.read_tensor(name, entry))
        )

    def arrays(self, tree: dict[str, TensorEntry], mmap: bool) -> dict[str, np.ndarray]:
        if not isinstance(mmap, bool):
            raise InvalidArgumentError("mmap", mmap, "must be True or False")
        if mmap:
            return allocating(tree, lambda: self.objects.map_tensors(tree.items()))
        return allocating(tree, lambda: self.objects.read_tensors(tree.items()))
