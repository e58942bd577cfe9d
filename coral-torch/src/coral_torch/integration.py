"""PyTorchIntegration: models, optimizers, schedulers and RNGs to Coral weights and state, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from coral.core.weight_tensor import WeightMetadata, WeightTensor
from coral.errors import InvalidArgumentError, ShapeMismatchError

from .convert import numpy_to_tensor, tensor_to_numpy, torch_dtype_name


def _to_numpy_tree(value: Any, copy: bool = True) -> Any:
    if isinstance(value, torch.Tensor):  # a CPU tensor's array shares its memory: copy for a snapshot
        return tensor_to_numpy(value) if not copy or value.device.type != "cpu" else tensor_to_numpy(value).copy()
    if isinstance(value, dict):
        return {k: _to_numpy_tree(v, copy) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy_tree(v, copy) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_numpy_tree(v, copy) for v in value)
    return value


def _to_torch_tree(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return numpy_to_tensor(value)
    if isinstance(value, dict):
        return {k: _to_torch_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_torch_tree(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_torch_tree(v) for v in value)
    return value


def _check_module(model: Any) -> None:
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError("model", type(model).__name__, "expected a torch.nn.Module")


def _shape_of(value: Any) -> tuple[int, ...]:
    if isinstance(value, WeightTensor):
        return tuple(value.shape)
    return tuple(np.shape(value))


def _short(names: list[str], limit: int = 20) -> list[str] | str:
    return names if len(names) <= limit else f"{names[:limit]} and {len(names) - limit} more"


def _layer_types(model: torch.nn.Module) -> dict[str, str]:
    types = {}
    for mod_name, module in model.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            types[f"{mod_name}.{pname}" if mod_name else pname] = type(module).__name__
    return types


class PyTorchIntegration:
    """Static helpers that the torch hook implementations also use."""

    @staticmethod
    def model_to_weights(model: torch.nn.Module, copy: bool = True) -> dict[str, WeightTensor]:
        """The full ``state_dict`` (parameters and buffers), dtype kept, layer type recorded; CUDA tensors go to CPU.

        ``copy=False`` lets CPU arrays share memory with the model (no copy; for writing at once).
        """
        _check_module(model)
        types = _layer_types(model)
        out: dict[str, WeightTensor] = {}
        for name, tensor in model.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                continue  # get_extra_state() payloads are not tensors
            if tensor.is_meta:
                raise InvalidArgumentError(name, "meta tensor", "has no data to save: materialize the model first")
            arr = tensor_to_numpy(tensor)
            if copy and tensor.device.type == "cpu":
                arr = arr.copy()
            meta = WeightMetadata(name, tuple(tensor.shape), torch_dtype_name(tensor.dtype), layer_type=types.get(name))
            out[name] = WeightTensor(arr, meta)
        return out

    @staticmethod
    def weights_to_model(
        weights: Mapping[str, WeightTensor | np.ndarray], model: torch.nn.Module, strict: bool = False
    ) -> dict[str, list[str]]:
        """Copy weights into the model in place; returns ``{"loaded", "missing", "unexpected"}``.

        Everything is checked before anything is copied: a shape mismatch raises ShapeMismatchError naming
        the tensor and both shapes, and ``strict=True`` raises on missing or unexpected names. Each value is
        cast to the model tensor's dtype and moved to its device; meta tensors are replaced (materialized).
        """
        _check_module(model)
        own = model.state_dict(keep_vars=True)
        own = {k: v for k, v in own.items() if isinstance(v, torch.Tensor)}
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        if strict and (missing or unexpected):
            raise InvalidArgumentError(
                "weights", f"missing={_short(missing)}, unexpected={_short(unexpected)}",
                "strict=True needs the checkpoint and the model to hold exactly the same tensor names",
            )
        bad = [
            f"tensor {name!r}: checkpoint shape {_shape_of(weights[name])} != model shape {tuple(own[name].shape)}"
            for name in sorted(weights)
            if name in own and _shape_of(weights[name]) != tuple(own[name].shape)
        ]
        if bad:
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise ShapeMismatchError("; ".join(bad[:10]) + more)
        loaded: list[str] = []
        on_meta: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, value in weights.items():
                if name not in own:
                    continue
                target = own[name]
                src = numpy_to_tensor(value.data if isinstance(value, WeightTensor) else np.asarray(value))
                if src.dtype != target.dtype:
                    src = src.to(target.dtype)
                if target.is_meta:
                    on_meta[name] = src
                elif not copy_in_place(target, src):
                    target.copy_(src)  # copies across devices (CPU -> CUDA) as needed
                loaded.append(name)
        if on_meta:
            model.load_state_dict(on_meta, strict=False, assign=True)
        return {"loaded": loaded, "missing": missing, "unexpected": unexpected}

    @staticmethod
    def save_optimizer_state(optimizer: torch.optim.Optimizer, copy: bool = True) -> dict[str, Any]:
        """The optimizer's ``state_dict`` with tensors as numpy arrays (bits kept); a snapshot unless ``copy=False``."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise InvalidArgumentError("optimizer", type(optimizer).__name__, "expected a torch.optim.Optimizer")
        return _to_numpy_tree(optimizer.state_dict(), copy)

    @staticmethod
    def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`save_optimizer_state` (tensors go to each parameter's device)."""
        optimizer.load_state_dict(_to_torch_tree(dict(state)))

    @staticmethod
    def save_scheduler_state(scheduler: Any) -> dict[str, Any]:
        """The scheduler's ``state_dict`` (a snapshot; tensors as numpy arrays)."""
        if not callable(getattr(scheduler, "state_dict", None)):
            raise InvalidArgumentError("scheduler", type(scheduler).__name__, "has no state_dict()")
        return _to_numpy_tree(scheduler.state_dict())

    @staticmethod
    def load_scheduler_state(scheduler: Any, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`save_scheduler_state`."""
        scheduler.load_state_dict(_to_torch_tree(dict(state)))

    @staticmethod
    def get_random_state() -> dict[str, Any]:
        """python ``random``, numpy, torch CPU and every CUDA device (when present)."""
        from coral.store import builtin

        state = builtin.coral_get_rng_state()
        state.update(torch_rng_state())
        return state

    @staticmethod
    def set_random_state(state: Mapping[str, Any]) -> None:
        from coral.store import builtin

        builtin.coral_set_rng_state(dict(state))
        set_torch_rng_state(state)


def torch_rng_state() -> dict[str, Any]:
    """``{"torch": CPU state, "torch_cuda": [state per device] or None}``.

    CUDA is read only once initialized: an unused CUDA generator is still at its seed, and reading it
    would create a CUDA context in a CPU-only run.
    """
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [tensor_to_numpy(s) for s in torch.cuda.get_rng_state_all()]
    return {"torch": tensor_to_numpy(torch.get_rng_state()), "torch_cuda": cuda}


def copy_in_place(target: torch.Tensor, src: torch.Tensor) -> bool:
    """Copy ``src`` into the CPU tensor ``target`` as one plain memcpy (same dtype, both contiguous); False when
    that does not apply. ``Tensor.copy_`` splits a copy over torch's intra-op threads, which on a busy machine
    costs ten times the copy itself; a load is one copy per tensor and gains nothing from that split."""
    if (
        target.device.type != "cpu" or src.device.type != "cpu" or target.dtype != src.dtype
        or not target.is_contiguous() or not src.is_contiguous() or target.shape != src.shape
        or target.is_conj() or target.is_neg()
    ):
        return False
    dst = target.detach().view(-1).view(torch.uint8).numpy()
    np.copyto(dst, src.detach().reshape(-1).view(torch.uint8).numpy())
    return True


def _byte_tensor(value: Any) -> torch.Tensor:
    """An RNG state as the uint8 CPU tensor torch wants, whether it was kept as a tensor or a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.uint8)
    return numpy_to_tensor(np.asarray(value, dtype=np.uint8))


def set_torch_rng_state(state: Mapping[str, Any]) -> None:
    if state.get("torch") is not None:
        torch.set_rng_state(_byte_tensor(state["torch"]))
    cuda = state.get("torch_cuda")
    if cuda is not None and len(cuda) and torch.cuda.is_available():
        states = [_byte_tensor(s) for s in cuda]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
