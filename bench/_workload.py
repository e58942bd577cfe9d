"""The benchmark's workload: a 21M-parameter residual MLP trained with AdamW on synthetic data, on CPU.

Each block is a transformer feed-forward block (LayerNorm, Linear 512->2048, GELU, Linear 2048->512,
residual), so weights and Adam moments have the shapes and statistics of a real network's. The data is a
teacher-student task (labels from a fixed random network), so the loss falls and gradients stay real.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

D, H, BLOCKS, IN, OUT = 512, 2048, 10, 256, 64
BATCH = 64


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(D)
        self.fc1 = torch.nn.Linear(D, H)
        self.fc2 = torch.nn.Linear(H, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln(x))))


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [
        torch.nn.Linear(IN, D),
        *[Block() for _ in range(BLOCKS)],
        torch.nn.LayerNorm(D),
        torch.nn.Linear(D, OUT),
    ]
    return torch.nn.Sequential(*layers)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Teacher:
    """Synthetic labelled batches: x ~ N(0, 1), y = argmax of a fixed random two-layer network."""

    def __init__(self, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(IN, 256, generator=g) / IN**0.5
        self.w2 = torch.randn(256, OUT, generator=g) / 16
        self.gen = torch.Generator().manual_seed(seed + 1)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(BATCH, IN, generator=self.gen)
        return x, (torch.tanh(x @ self.w1) @ self.w2).argmax(-1)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int, floor: float = 0.1) -> Any:
    """The usual schedule of a real run: linear warm-up over ``warmup`` steps, then cosine decay to
    ``floor`` x the peak learning rate at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    every: int,
    teacher: Teacher,
    scheduler: Any = None,
) -> Iterator[tuple[int, float]]:
    """Run ``steps`` AdamW steps; yield ``(step, loss)`` every ``every`` steps (the caller checkpoints then)."""
    model.train()
    for step in range(1, steps + 1):
        x, y = teacher.batch()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % every == 0:
            yield step, float(loss.detach())


def weights(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors (optionally cast, e.g. to bfloat16 as a bf16 export would)."""
    sd = model.state_dict()
    return {k: (v.detach().to(dtype) if dtype is not None else v.detach()) for k, v in sd.items()}


def adam_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state (exp_avg, exp_avg_sq, step) under ``optim/<param>/<field>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for field, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    out[f"optim/{names[id(p)]}/{field}"] = value.detach()
    return out


def as_numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Zero-copy numpy views (bfloat16 through ml_dtypes, bit for bit)."""
    import ml_dtypes

    out = {}
    for k, t in tensors.items():
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            out[k] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[k] = t.numpy()
    return out
