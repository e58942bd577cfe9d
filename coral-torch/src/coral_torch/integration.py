"""PyTorchIntegration: models, optimizers, schedulers and RNGs to Coral weights and state, and back."""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

from coral.core.weight_tensor import WeightMetadata, WeightTensor
from coral.errors import InvalidArgumentError, ShapeMismatchError

from .convert import numpy_to_tensor, tensor_to_numpy, torch_dtype_name


def _to_numpy_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tensor_to_numpy(value)
    if isinstance(value, dict):
        return {k: _to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy_tree(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_numpy_tree(v) for v in value)
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


def _layer_types(model: torch.nn.Module) -> dict[str, str]:
    types = {}
    for mod_name, module in model.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            types[f"{mod_name}.{pname}" if mod_name else pname] = type(module).__name__
    return types


class PyTorchIntegration:
    """Static helpers that the torch hook implementations also use."""

    @staticmethod
    def model_to_weights(model: torch.nn.Module) -> dict[str, WeightTensor]:
        """The full ``state_dict`` (parameters and buffers), dtype kept, layer type recorded."""
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError("model", type(model).__name__, "expected a torch.nn.Module")
        types = _layer_types(model)
        out: dict[str, WeightTensor] = {}
        for name, tensor in model.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                continue
            arr = tensor_to_numpy(tensor)
            meta = WeightMetadata(name, tuple(tensor.shape), torch_dtype_name(tensor.dtype), layer_type=types.get(name))
            out[name] = WeightTensor(arr, meta)
        return out

    @staticmethod
    def weights_to_model(
        weights: Mapping[str, WeightTensor | np.ndarray], model: torch.nn.Module, strict: bool = False
    ) -> dict[str, list[str]]:
        """Copy weights into the model in place; returns ``{"loaded", "missing", "unexpected"}``.

        A shape mismatch raises ShapeMismatchError naming the tensor and both shapes; ``strict=True`` raises
        on missing or unexpected names.
        """
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError("model", type(model).__name__, "expected a torch.nn.Module")
        own = model.state_dict()
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        if strict and (missing or unexpected):
            raise InvalidArgumentError(
                "weights", f"missing={missing}, unexpected={unexpected}", "strict=True needs an exact key match"
            )
        loaded = []
        with torch.no_grad():
            for name, value in weights.items():
                if name not in own:
                    continue
                arr = value.data if isinstance(value, WeightTensor) else np.asarray(value)
                target = own[name]
                if tuple(arr.shape) != tuple(target.shape):
                    raise ShapeMismatchError(
                        f"tensor {name!r}: stored shape {tuple(arr.shape)} != model shape {tuple(target.shape)}"
                    )
                src = numpy_to_tensor(arr)
                if src.dtype != target.dtype:
                    src = src.to(target.dtype)
                target.copy_(src)
                loaded.append(name)
        return {"loaded": loaded, "missing": missing, "unexpected": unexpected}

    @staticmethod
    def save_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return _to_numpy_tree(optimizer.state_dict())

    @staticmethod
    def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
        optimizer.load_state_dict(_to_torch_tree(dict(state)))

    @staticmethod
    def save_scheduler_state(scheduler: Any) -> dict[str, Any]:
        return _to_numpy_tree(scheduler.state_dict())

    @staticmethod
    def load_scheduler_state(scheduler: Any, state: Mapping[str, Any]) -> None:
        scheduler.load_state_dict(_to_torch_tree(dict(state)))

    @staticmethod
    def get_random_state() -> dict[str, Any]:
        """python ``random``, numpy, torch CPU and every CUDA device (when present)."""
        from coral.store import builtin

        state = builtin.coral_get_rng_state()
        state.update(_torch_rng_state())
        return state

    @staticmethod
    def set_random_state(state: Mapping[str, Any]) -> None:
        from coral.store import builtin

        builtin.coral_set_rng_state(dict(state))
        _set_torch_rng_state(state)


def _torch_rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": tensor_to_numpy(torch.get_rng_state())}
    if torch.cuda.is_available():
        out["torch_cuda"] = [tensor_to_numpy(s) for s in torch.cuda.get_rng_state_all()]
    return out


def _set_torch_rng_state(state: Mapping[str, Any]) -> None:
    if state.get("torch") is not None:
        torch.set_rng_state(numpy_to_tensor(np.asarray(state["torch"], dtype=np.uint8)))
    cuda = state.get("torch_cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([numpy_to_tensor(np.asarray(s, dtype=np.uint8)) for s in cuda][: torch.cuda.device_count()])


_ = random  # python RNG handled by core's builtin plugin
