"""coral-jax: JAX, Flax, Optax and Orbax support for Coral (also importable as ``coral.integrations.jax``).

Names load lazily, so ``import coral_jax`` (and the plugin loading it triggers) imports JAX only when a name
is first used, and Orbax only for ``import_orbax``/``export_orbax``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.lazy import lazy_exports

_EXPORTS = {
    "CoralCheckpointManager": "manager",
    "CoralCheckpointManagerOptions": "manager",
    "ShuffleIterator": "data",
    "export_orbax": "orbax_io",
    "flatten_pytree": "pytree",
    "import_orbax": "orbax_io",
    "leaf_names": "pytree",
    "load_pytree": "commits",
    "model_to_weights": "models",
    "next_key": "rng",
    "pytree_to_weights": "pytree",
    "read_orbax": "orbax_io",
    "save_pytree": "commits",
    "to_numpy": "convert",
    "track_key": "rng",
    "tracked_key": "rng",
    "tracked_keys": "rng",
    "unflatten_pytree": "pytree",
    "untrack_key": "rng",
    "weights_to_model": "models",
}

__all__ = [
    "CoralCheckpointManager",
    "CoralCheckpointManagerOptions",
    "ShuffleIterator",
    "export_orbax",
    "flatten_pytree",
    "import_orbax",
    "leaf_names",
    "load_pytree",
    "model_to_weights",
    "next_key",
    "pytree_to_weights",
    "read_orbax",
    "save_pytree",
    "to_numpy",
    "track_key",
    "tracked_key",
    "tracked_keys",
    "unflatten_pytree",
    "untrack_key",
    "weights_to_model",
]

if TYPE_CHECKING:
    from .commits import load_pytree, save_pytree
    from .convert import to_numpy
    from .data import ShuffleIterator
    from .manager import CoralCheckpointManager, CoralCheckpointManagerOptions
    from .models import model_to_weights, weights_to_model
    from .orbax_io import export_orbax, import_orbax, read_orbax
    from .pytree import flatten_pytree, leaf_names, pytree_to_weights, unflatten_pytree
    from .rng import next_key, track_key, tracked_key, tracked_keys, untrack_key


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
