"""coral-torch's hook implementations, registered through the ``coral`` entry point."""

from __future__ import annotations

from typing import Any

import torch

from coral.hookspecs import hookimpl

from .convert import tensor_to_numpy
from .integration import PyTorchIntegration, _set_torch_rng_state, _torch_rng_state


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
    if hasattr(scheduler, "state_dict") and hasattr(scheduler, "optimizer") and isinstance(scheduler.optimizer, torch.optim.Optimizer):
        return PyTorchIntegration.save_scheduler_state(scheduler)
    return None


@hookimpl
def coral_set_scheduler_state(scheduler: Any, state: Any) -> Any:
    if hasattr(scheduler, "load_state_dict") and hasattr(scheduler, "optimizer") and isinstance(scheduler.optimizer, torch.optim.Optimizer):
        PyTorchIntegration.load_scheduler_state(scheduler, state)
        return True
    return None


@hookimpl
def coral_get_rng_state() -> dict[str, Any]:
    return _torch_rng_state()


@hookimpl
def coral_set_rng_state(state: dict[str, Any]) -> None:
    _set_torch_rng_state(state)
