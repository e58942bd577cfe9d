"""coral-jax's hook implementations, registered through the ``coral`` entry point.

Nothing here imports JAX at load time: while ``jax`` is not imported no object can be a JAX array, so a
torch-only program with coral-jax installed never pays for importing JAX.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from coral.hookspecs import hookimpl


def _jax_loaded() -> bool:
    return "jax" in sys.modules


@hookimpl
def coral_model_to_weights(model: Any) -> Any:
    if not _jax_loaded():
        return None
    from .models import is_jax_pytree, is_nnx_module, model_to_weights

    if is_nnx_module(model) or is_jax_pytree(model):
        return model_to_weights(model)
    return None


@hookimpl
def coral_weights_to_model(weights: Any, model: Any, strict: bool) -> Any:
    if not _jax_loaded():
        return None
    from .models import is_jax_pytree, is_nnx_module, weights_to_model

    if is_nnx_module(model) or is_jax_pytree(model):
        return weights_to_model(weights, model, strict=strict)
    return None


@hookimpl
def coral_tensor_to_array(value: Any) -> Any:
    if not _jax_loaded():
        return None
    from .convert import is_jax_array, to_numpy

    return to_numpy(value) if is_jax_array(value) else None


@hookimpl
def coral_get_rng_state() -> Any:
    rng = sys.modules.get("coral_jax.rng")  # keys can only be tracked once this module is imported
    return rng.get_rng_state() if rng is not None else None


@hookimpl
def coral_set_rng_state(state: dict[str, Any]) -> None:
    if isinstance(state, dict) and state.get("jax"):
        from .rng import set_rng_state

        set_rng_state(state)


def _looks_like_orbax(path: Path) -> bool:
    markers = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")
    if not path.is_dir():
        return False
    if any((path / m).is_file() for m in markers):
        return True
    return any(c.is_dir() and any((c / m).is_file() for m in markers) for c in path.iterdir())


@hookimpl
def coral_import_file(path: str) -> Any:
    p = Path(path)
    if not _looks_like_orbax(p):
        return None
    from .orbax_io import read_orbax

    return read_orbax(p)


@hookimpl
def coral_export(weights: dict[str, Any], metadata: dict[str, Any], out: str, format: str) -> Any:
    if format != "orbax":
        return None
    from pathlib import Path

    from coral.errors import InvalidArgumentError

    if Path(out).expanduser().exists():  # Orbax refuses an existing folder, deep inside its own threads
        raise InvalidArgumentError(
            "out", out, "already exists; Orbax writes a new folder: remove it or pick another path"
        )
    from .orbax_io import write_orbax

    return str(write_orbax(weights, metadata, out))


@hookimpl
def coral_environment() -> Any:
    """jax, jaxlib, flax, optax and orbax versions; the accelerator once JAX is imported (never imports it)."""
    from coral.training.provenance import package_version

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
    info: dict[str, Any] = {"versions": {n.replace("-", "_"): package_version(n) for n in names}}
    if _jax_loaded():
        try:
            devices = sys.modules["jax"].devices()
            if devices and devices[0].platform != "cpu":
                info["device"] = {"type": devices[0].platform, "name": devices[0].device_kind, "count": len(devices)}
        except Exception:  # noqa: BLE001 - no backend: the CPU stays the device
            pass
    return info
