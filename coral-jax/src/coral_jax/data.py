"""A shuffling batch iterator driven by a JAX key that follows the CheckpointableIterator protocol.

Each epoch's order is ``jax.random.permutation(fold_in(key, epoch), n)``, so the state is just the key, the
epoch and the position: a pipeline restored with ``set_state`` yields the same next batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from coral.errors import InvalidArgumentError

from .convert import is_typed_key, key_impl_name, to_jax, to_numpy


class ShuffleIterator:
    """Endless shuffled mini-batches of a pytree of host arrays sharing a leading dimension.

    ``next(it)`` returns the same pytree with each leaf indexed by the batch (numpy arrays); epochs roll over
    and ``epoch``/``position`` say where it is. ``drop_remainder=False`` also yields the last short batch.
    """

    def __init__(self, data: Any, batch_size: int, key: Any, *, drop_remainder: bool = True) -> None:
        leaves = jax.tree_util.tree_leaves(data)
        if not leaves:
            raise InvalidArgumentError("data", type(data).__name__, "has no arrays")
        sizes = {int(np.shape(leaf)[0]) for leaf in leaves}
        if len(sizes) != 1:
            raise InvalidArgumentError("data", sorted(sizes), "every leaf needs the same leading dimension")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError("batch_size", batch_size, "must be a positive integer")
        self._data = jax.tree_util.tree_map(np.asarray, data)
        self._n = sizes.pop()
        if drop_remainder and batch_size > self._n:
            raise InvalidArgumentError("batch_size", batch_size, f"is larger than the {self._n} examples")
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.key = key
        self.epoch = 0
        self.position = 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            self._order = np.asarray(
                jax.random.permutation(jax.random.fold_in(self.key, self.epoch), self._n)
            )
        return self._order

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        end = self.position + self.batch_size
        if end > self._n and (self.drop_remainder or self.position >= self._n):
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
            end = self.batch_size
        idx = self._epoch_order()[self.position : min(end, self._n)]
        self.position = min(end, self._n)
        return jax.tree_util.tree_map(lambda a: a[idx], self._data)

    def get_state(self) -> dict[str, Any]:
        """The key data (uint32), its PRNG implementation (None for a raw key), the epoch and the position."""
        return {
            "key": to_numpy(self.key),
            "impl": key_impl_name(self.key) if is_typed_key(self.key) else None,
            "epoch": self.epoch,
            "position": self.position,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume exactly where :meth:`get_state` was taken."""
        try:
            data = np.asarray(state["key"], dtype=np.uint32)
            impl = state.get("impl")
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                "state", type(state).__name__, f"is not a ShuffleIterator state ({exc})"
            ) from None
        self.key = to_jax(data, impl=impl) if impl else jax.numpy.asarray(data)
        self.epoch, self.position, self._order = epoch, position, None


__all__ = ["ShuffleIterator"]
