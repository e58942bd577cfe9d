"""coral-torch's hook implementations, registered through the ``coral`` entry point.

Loading this module imports no torch: each hook first checks whether torch is already imported (an object
can only be a torch model, tensor or generator if it is), so ``coral`` commands and JAX users never pay
torch's import time, and loading plugins never touches torch's RNG.
"""

from __future__ import annotations

import sys
from typing import Any

from coral.hookspecs import hookimpl


def _impl() -> Any:
    if "torch" not in sys.modules:
        return None
    from . import _hooks_impl

    return _hooks_impl


def _data() -> Any:
    if "torch" not in sys.modules:
        return None
    from . import data

    return data


@hookimpl
def coral_model_to_weights(model: Any) -> Any:
    impl = _impl()
    return impl.coral_model_to_weights(model) if impl else None


@hookimpl
def coral_weights_to_model(weights: Any, model: Any, strict: bool) -> Any:
    impl = _impl()
    return impl.coral_weights_to_model(weights, model, strict) if impl else None


@hookimpl
def coral_tensor_to_array(value: Any) -> Any:
    impl = _impl()
    return impl.coral_tensor_to_array(value) if impl else None


@hookimpl
def coral_array_to_tensor(array: Any, kind: str) -> Any:
    if kind != "torch":
        return None
    from . import _hooks_impl  # a torch tensor was saved: the caller wants torch back

    return _hooks_impl.coral_array_to_tensor(array, kind)


@hookimpl
def coral_get_optimizer_state(optimizer: Any) -> Any:
    impl = _impl()
    return impl.coral_get_optimizer_state(optimizer) if impl else None


@hookimpl
def coral_set_optimizer_state(optimizer: Any, state: Any) -> Any:
    impl = _impl()
    return impl.coral_set_optimizer_state(optimizer, state) if impl else None


@hookimpl
def coral_get_scheduler_state(scheduler: Any) -> Any:
    impl = _impl()
    return impl.coral_get_scheduler_state(scheduler) if impl else None


@hookimpl
def coral_set_scheduler_state(scheduler: Any, state: Any) -> Any:
    impl = _impl()
    return impl.coral_set_scheduler_state(scheduler, state) if impl else None


@hookimpl
def coral_get_rng_state() -> Any:
    impl = _impl()
    return impl.coral_get_rng_state() if impl else None


@hookimpl
def coral_set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state or "torch_cuda" in state:
        from . import _hooks_impl  # restoring a torch RNG state needs torch, imported or not

        _hooks_impl.coral_set_rng_state(state)


@hookimpl
def coral_get_data_state(source: Any) -> Any:
    data = _data()
    return data.coral_get_data_state(source) if data else None


@hookimpl
def coral_set_data_state(source: Any, state: dict[str, Any]) -> Any:
    data = _data()
    return data.coral_set_data_state(source, state) if data else None


@hookimpl
def coral_import_file(path: str) -> Any:
    """``.pt``/``.pth``/``.bin``/``.ckpt`` state dicts, read with ``weights_only=True`` (imports torch on demand)."""
    if not str(path).lower().endswith((".pt", ".pth", ".bin", ".ckpt")):
        return None
    from . import _hooks_impl

    return _hooks_impl.coral_import_file(path)


@hookimpl
def coral_export(weights: Any, metadata: dict[str, Any], out: str, format: str) -> Any:
    """A sharded (torch.distributed.checkpoint) commit as one consolidated safetensors file."""
    if format != "safetensors" or "dcp" not in metadata:
        return None
    from . import dcp_export

    return dcp_export.export_safetensors(weights, metadata, out)


@hookimpl
def coral_environment() -> Any:
    """torch's version always (read from the installed metadata); CUDA devices once torch is imported."""
    if "torch" not in sys.modules:
        from coral.training.provenance import package_version

        return {"versions": {"torch": package_version("torch")}}
    from . import provenance

    return provenance.environment()


@hookimpl
def coral_find_hparams(source: Any) -> Any:
    if "torch" not in sys.modules:
        return None
    import torch

    if isinstance(source, torch.optim.Optimizer):
        from . import provenance

        return provenance.optimizer_hparams(source)
    return None
