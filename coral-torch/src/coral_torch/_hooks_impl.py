"""The torch-importing bodies of coral-torch's hooks; ``hooks`` calls them only once torch is in use."""

from __future__ import annotations

from typing import Any

import torch
from coral.hookspecs import hookimpl

from .convert import numpy_to_tensor, tensor_to_numpy
from .integration import PyTorchIntegration, set_torch_rng_state, torch_rng_state


@hookimpl
def coral_model_to_weights(model: Any) -> Any:
    if isinstance(model, torch.nn.Module):
        return PyTorchIntegration.model_to_weights(model)
    return None


@hookimpl
def coral_weights_to_model(weights: Any, model: Any, strict: bool) -> Any:
    if isinstance(model, torch.nn.Module):
        return PyTorchIntegration.weights_to_model(weights, model, strict=strict)
    return None


@hookimpl
def coral_tensor_to_array(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tensor_to_numpy(value)
    return None


@hookimpl
def coral_array_to_tensor(array: Any, kind: str) -> Any:
    """Optimizer/scheduler/RNG state that held torch tensors comes back as torch tensors (same bits)."""
    if kind == "torch":
        return numpy_to_tensor(array)
    return None


@hookimpl
def coral_get_optimizer_state(optimizer: Any) -> Any:
    if isinstance(optimizer, torch.optim.Optimizer):
        return PyTorchIntegration.save_optimizer_state(optimizer)
    return None


@hookimpl
def coral_set_optimizer_state(optimizer: Any, state: Any) -> Any:
    if isinstance(optimizer, torch.optim.Optimizer):
        PyTorchIntegration.load_optimizer_state(optimizer, state)
        return True
    return None


@hookimpl
def coral_get_scheduler_state(scheduler: Any) -> Any:
    if (
        hasattr(scheduler, "state_dict")
        and hasattr(scheduler, "optimizer")
        and isinstance(scheduler.optimizer, torch.optim.Optimizer)
    ):
        return PyTorchIntegration.save_scheduler_state(scheduler)
    return None


@hookimpl
def coral_set_scheduler_state(scheduler: Any, state: Any) -> Any:
    if (
        hasattr(scheduler, "load_state_dict")
        and hasattr(scheduler, "optimizer")
        and isinstance(scheduler.optimizer, torch.optim.Optimizer)
    ):
        PyTorchIntegration.load_scheduler_state(scheduler, state)
        return True
    return None


@hookimpl
def coral_get_rng_state() -> dict[str, Any]:
    return torch_rng_state()


@hookimpl
def coral_set_rng_state(state: dict[str, Any]) -> None:
    set_torch_rng_state(state)


_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@hookimpl
def coral_import_file(path: str) -> Any:
    """Read a ``.pt``/``.pth``/``.bin``/``.ckpt`` state dict with ``weights_only=True``: never unpickles objects.

    Nested containers become ``/``-joined names (``model/fc.weight``); non-tensor leaves are skipped.
    """
    import os
    import pickle
    import warnings
    import zipfile

    from coral.errors import MalformedFileError

    if not path.lower().endswith(_TORCH_SUFFIXES) or not os.path.isfile(path):
        return None
    try:
        # mmap keeps memory near one tensor for zip-format files; the legacy format cannot be mapped
        with warnings.catch_warnings():  # torch warns about old pickle protocols; the refusal is what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[-1] if lines else "")
        raise MalformedFileError(
            f"{path}: refused to load: not a plain state dict of tensors and containers "
            f"(read with weights_only=True, nothing was executed): {detail}"
        ) from None
    except Exception as exc:
        raise MalformedFileError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None
    out: dict[str, Any] = {}
    _flatten_tensors(obj, "", out)
    if not out:
        raise MalformedFileError(f"{path}: holds no tensors")
    return out


def _flatten_tensors(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = tensor_to_numpy(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten_tensors(value, f"{prefix}/{key}" if prefix else str(key), out)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _flatten_tensors(value, f"{prefix}/{i}" if prefix else str(i), out)
