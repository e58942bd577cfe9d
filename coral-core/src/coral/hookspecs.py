"""Coral's plugin surface: every hook a plugin may implement, in one place.

Plugins register through the entry-point group ``coral`` (or directly on the plugin manager in tests) and
decorate their functions with :data:`coral.hookimpl`. Hooks marked ``firstresult`` are "who recognises this
object?" questions: a plugin returns ``None`` when the object is not its kind.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("coral")
hookimpl = pluggy.HookimplMarker("coral")


# --- weight conversion -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def coral_model_to_weights(model: Any) -> dict[str, Any] | None:
    """Called to turn a framework model into ``{name: WeightTensor}``.

    ``model`` is whatever the user passed (an ``nn.Module``, a pytree, ...). Return ``None`` when the object
    is not of your framework; the first non-None answer wins.
    """


@hookspec(firstresult=True)
def coral_weights_to_model(weights: dict[str, Any], model: Any, strict: bool) -> dict[str, list[str]] | None:
    """Called to load ``{name: WeightTensor}`` into ``model`` in place.

    Return ``{"loaded": [...], "missing": [...], "unexpected": [...]}`` or ``None`` when ``model`` is not of
    your framework. With ``strict=True`` missing or unexpected names must raise.
    """


@hookspec(firstresult=True)
def coral_tensor_to_array(value: Any) -> Any | None:
    """Called on a value found inside optimizer/scheduler/RNG state that is neither JSON nor numpy: return a
    numpy array with the exact bits (bf16 stays bf16), or ``None`` when ``value`` is not your tensor type."""


@hookspec(firstresult=True)
def coral_array_to_tensor(array: Any, kind: str) -> Any | None:
    """Called when a checkpoint's optimizer/scheduler/RNG state is loaded, for each array that was a framework
    tensor when saved (``kind`` is its top-level module, e.g. ``"torch"``): return that tensor type with the
    exact bits, or ``None`` when ``kind`` is not yours (the numpy array is then given back)."""


@hookspec(firstresult=True)
def coral_import_file(path: str) -> dict[str, Any] | None:
    """Called by ``coral import`` for a file or folder core cannot read (``.pt``, ``.bin``, an HF folder): return
    ``{name: ndarray}`` (and never unpickle arbitrary objects), or ``None`` when the format is not yours. A dict
    subclass with a ``.metadata`` mapping adds that metadata to the import commit."""


@hookspec(firstresult=True)
def coral_export(weights: dict[str, Any], metadata: dict[str, Any], out: str, format: str) -> str | None:
    """Called by ``coral export --format F``: write ``weights`` ({name: ndarray}) in format ``F`` to ``out`` and
    return the written path, or ``None`` when ``F`` is not a format you handle. ``metadata`` is the exported
    commit's metadata; ``weights`` is a read-only mapping that reads one tensor per lookup."""


# --- training-state capture --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def coral_get_optimizer_state(optimizer: Any) -> dict[str, Any] | None:
    """Called to capture an optimizer's state as a nested dict of JSON values and numpy arrays.

    Return ``None`` when ``optimizer`` is not of your framework. Arrays are stored as tensors in the commit
    tree (deduplicated and delta-encoded), the rest as JSON metadata.
    """


@hookspec(firstresult=True)
def coral_set_optimizer_state(optimizer: Any, state: dict[str, Any]) -> bool | None:
    """Called to restore a state captured by :func:`coral_get_optimizer_state`; return True when handled."""


@hookspec(firstresult=True)
def coral_get_scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    """Called to capture a learning-rate scheduler's state; ``None`` when not your framework's."""


@hookspec(firstresult=True)
def coral_set_scheduler_state(scheduler: Any, state: dict[str, Any]) -> bool | None:
    """Called to restore a scheduler state; return True when handled."""


@hookspec
def coral_get_rng_state() -> dict[str, Any] | None:
    """Called when a checkpoint captures random state: return ``{generator_name: state}`` for the generators
    your plugin owns (e.g. ``"torch"``, ``"cuda"``, ``"jax"``), or None. Every plugin contributes; states
    may hold numpy arrays and JSON values only."""


@hookspec
def coral_set_rng_state(state: dict[str, Any]) -> None:
    """Called on restore with the merged ``{generator_name: state}``: restore the generators you own and
    ignore the others."""


@hookspec(firstresult=True)
def coral_get_data_state(source: Any) -> dict[str, Any] | None:
    """Called to capture a data pipeline's position (a sampler, a loader, an iterator).

    Core already handles objects with ``get_state()``/``set_state()`` (the CheckpointableIterator protocol);
    implement this for framework objects that lack them. Return ``None`` when ``source`` is not yours.
    """


@hookspec(firstresult=True)
def coral_set_data_state(source: Any, state: dict[str, Any]) -> bool | None:
    """Called to restore a data pipeline's position; return True when handled."""


# --- storage backends --------------------------------------------------------------------------------------


@hookspec
def coral_storage_backends(register: Callable[[str, type], None]) -> None:
    """Called once when Coral resolves a store URL: call ``register(scheme, StoreClass)`` for each URL scheme
    you serve (``"file"``, ``"memory"``, ``"s3"``, ...). ``StoreClass.from_url(url)`` must build the store,
    which must subclass :class:`coral.store.base.Store` and pass ``coral.testing.StoreContract``."""


# --- provenance --------------------------------------------------------------------------------------------


@hookspec
def coral_environment() -> dict[str, Any] | None:
    """Called once per process when a checkpoint records its provenance: return ``{"versions": {name:
    version}, "device": {"type", "name", "count"}}`` for your framework (a device only for an accelerator you
    see), or None. Every plugin contributes; never import your framework just to answer."""


@hookspec(firstresult=True)
def coral_find_hparams(source: Any) -> dict[str, Any] | None:
    """Called at each save on objects an integration registered (an optimizer, a LightningModule,
    ``TrainingArguments``): return their hyperparameters as a flat-ish JSON-safe dict, or ``None`` when
    ``source`` is not of your framework."""
