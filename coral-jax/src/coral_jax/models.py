"""Models as Coral weights and back: ``nnx.Module`` objects and pytrees of jax arrays (Flax linen params)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from coral.core.weight_tensor import WeightTensor
from coral.errors import InvalidArgumentError

from .convert import is_jax_array
from .pytree import leaf_names, pytree_to_weights, unflatten_pytree


def is_nnx_module(obj: Any) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def is_jax_pytree(obj: Any) -> bool:
    """True when ``obj`` holds at least one jax array and otherwise only arrays, scalars and strings."""
    if isinstance(obj, type):
        return False
    found = False
    for leaf in jax.tree_util.tree_leaves(obj):
        if is_jax_array(leaf):
            found = True
        elif not isinstance(leaf, (np.ndarray, np.generic, bool, int, float, str)):
            return False
    return found


def model_to_weights(model: Any) -> dict[str, WeightTensor]:
    """``{name: WeightTensor}`` of an ``nnx.Module`` (its ``nnx.state``) or of a pytree of arrays."""
    if is_nnx_module(model):
        from flax import nnx

        return pytree_to_weights(nnx.state(model))
    return pytree_to_weights(model)


def weights_to_model(weights: Mapping[str, Any], model: Any, strict: bool = False) -> dict[str, list[str]]:
    """Load weights into an ``nnx.Module`` (``nnx.update``) or a dict/list pytree, in place.

    Returns ``{"loaded", "missing", "unexpected"}``; ``strict=True`` raises on missing or unexpected names.
    Tuples and other immutable containers cannot change in place: use ``load_pytree``/``unflatten_pytree``.
    """
    if is_nnx_module(model):
        from flax import nnx

        target = nnx.state(model)
    else:
        if not isinstance(model, (dict, list)):
            raise InvalidArgumentError(
                "model",
                type(model).__name__,
                "is immutable: use coral_jax.unflatten_pytree(weights, like=model)",
            )
        target = model
    names = leaf_names(target)
    missing = sorted(set(names) - set(weights))
    unexpected = sorted(set(weights) - set(names))
    if strict and (missing or unexpected):
        raise InvalidArgumentError(
            "weights", f"missing={missing}, unexpected={unexpected}", "strict=True needs an exact match"
        )
    known = set(names)
    present = {n: w for n, w in weights.items() if n in known}
    new = unflatten_pytree(present, like=target, partial=True)
    if is_nnx_module(model):
        from flax import nnx

        nnx.update(model, new)
    else:
        _assign(model, new)
    return {"loaded": sorted(present), "missing": missing, "unexpected": unexpected}


def _assign(dst: Any, src: Any) -> None:
    """Copy ``src``'s leaves into the mutable containers of ``dst`` (same structure)."""
    keys = list(dst) if isinstance(dst, dict) else range(len(dst))
    for k in keys:
        old, new = dst[k], src[k]
        if type(old) in (dict, list) and type(new) is type(old):
            _assign(old, new)
        else:
            dst[k] = new


__all__ = ["model_to_weights", "weights_to_model"]
