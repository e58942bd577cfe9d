"""What coral-torch adds to a checkpoint's provenance: torch's version, the CUDA devices, optimizer hparams."""

from __future__ import annotations

from typing import Any

import torch
from coral.training.provenance import json_safe, package_version

OPTIMIZER_KEYS = ("lr", "betas", "momentum", "weight_decay", "eps", "nesterov", "amsgrad", "dampening")


def environment() -> dict[str, Any]:
    """torch's version (and CUDA's), plus the GPU name and count when CUDA is available."""
    versions = {"torch": package_version("torch") or torch.__version__, "cuda": torch.version.cuda}
    info: dict[str, Any] = {"versions": versions}
    try:
        if torch.cuda.is_available():
            info["device"] = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    except Exception:  # noqa: BLE001 - a broken driver leaves the CPU as the device
        pass
    return info


def optimizer_hparams(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class and its first param group's lr, betas, weight decay (...); ``groups`` when several."""
    groups = [{k: json_safe(g[k]) for k in OPTIMIZER_KEYS if k in g} for g in optimizer.param_groups]
    out: dict[str, Any] = {"name": type(optimizer).__name__}
    out.update(groups[0] if groups else {})
    if any(g != groups[0] for g in groups[1:]):
        out["groups"] = groups
    return out
