"""Optimiser, learning-rate schedule and gradient clipping (method.md §6.1-§6.3)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from hifa.errors import require

LRSchedule = Literal["hifa", "dreamfusion"]
LR_SCHEDULES = ("hifa", "dreamfusion")
ADAN_BETAS = (0.98, 0.92, 0.99)
ADAN_EPS = 1e-8
ADAN_WEIGHT_DECAY = 2e-5
ADAN_MAX_GRAD_NORM = 5.0
GRID_LR_MULTIPLIER = 10.0


def param_groups(field: nn.Module, background: nn.Module | None, lr_mlp: float, lr_grid: float | None = None) -> list[dict]:
    """[MLPs (field minus its hash grid, plus background) at lr_mlp, hash grid at lr_grid (default 10·lr_mlp)]."""
    grid = list(field.encoding.parameters())
    grid_ids = {id(p) for p in grid}
    mlp = [p for p in field.parameters() if id(p) not in grid_ids]
    if background is not None:
        mlp += [p for p in background.parameters() if id(p) not in grid_ids]
    lr_grid = GRID_LR_MULTIPLIER * lr_mlp if lr_grid is None else lr_grid
    groups = [{"params": mlp, "lr": lr_mlp, "name": "mlp"}, {"params": grid, "lr": lr_grid, "name": "grid"}]
    return [g for g in groups if g["params"]]


def build_adan(
    param_groups: Iterable[dict] | Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float, float] = ADAN_BETAS,
    eps: float = ADAN_EPS,
    weight_decay: float = ADAN_WEIGHT_DECAY,
    max_grad_norm: float = ADAN_MAX_GRAD_NORM,
    foreach: bool | None = None,
    fused: bool = True,
) -> torch.optim.Optimizer:
    """`pytorch_optimizer.Adan` as §6.2: proximal decay (weight_decouple=False), global-norm clip max_grad_norm inside.

    `fused`: float32 CPU parameters take one C++ pass per step (`hifa.adan.FusedAdan`) instead of Adan's foreach ops.
    """
    from hifa.adan import FusedAdan

    require(lr > 0, "optim.lr", f"must be positive, got {lr}")
    require(max_grad_norm >= 0, "optim.max_grad_norm", f"must be >= 0, got {max_grad_norm}")
    return FusedAdan(
        param_groups,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        weight_decouple=False,
        max_grad_norm=max_grad_norm,
        foreach=foreach,
        fused=fused,
    )


def warmup_factor(
    step: int, warmup: int = 500, total: int = 10_000, min_ratio: float = 1.0, schedule: LRSchedule = "hifa"
) -> float:
    """LR factor after `step` optimiser steps (LambdaLR's convention: global step i uses factor(i-1), §10)."""
    # 'hifa' (§6.3): step/warmup for step <= warmup, then max(cosine, min_lr/lr); min_lr = lr makes it
    # constant 1. The argument is the number of optimiser steps already taken, as the reference's
    # LambdaLR: global step 1 runs at lr 0 and the first full-lr step is warmup + 1 = 501.
    require(schedule in LR_SCHEDULES, "optim.lr_schedule", f"must be one of {LR_SCHEDULES}")
    if schedule == "dreamfusion":
        return 1.0
    if step <= warmup:
        return step / warmup if warmup > 0 else 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return max(0.5 * (1.0 + math.cos(math.pi * progress)), min_ratio)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule = "hifa",
    warmup: int = 500,
    total: int = 10_000,
    min_ratio: float = 1.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over warmup_factor; call `.step()` after every optimiser step (so step i uses factor(i-1))."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_factor(s, warmup=warmup, total=total, min_ratio=min_ratio, schedule=schedule)
    )


def gradient_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the parameters' gradients (0-dim tensor): non-finite iff a gradient is (or it overflows)."""
    return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float, norm: torch.Tensor | None = None) -> torch.Tensor:
    """Clip gradients in place to global L2 norm max_norm; return the pre-clip global norm (`norm`: already computed)."""
    parameters = list(parameters)
    norm = gradient_norm(parameters) if norm is None else norm
    if math.isfinite(max_norm):  # torch would still multiply every gradient by 1.0
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm
