"""Diffusion noise schedule (method.md §1.3) and training timestep schedules (§4.6): pure functions."""

from __future__ import annotations

import math
from typing import Literal

import torch

TimestepSchedule = Literal["sqrt", "linear", "cosine", "random", "uniform"]
TIMESTEP_SCHEDULES = ("sqrt", "linear", "cosine", "random", "uniform")
NUM_TRAIN_TIMESTEPS = 1000
T_MAX = 980


def stable_diffusion_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """alpha-bar_t of SD's 'scaled_linear' DDPM schedule, float64, t = 0..steps-1."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def t_min_from_percent(min_percent: float) -> int:
    """t_min = floor(1000 * min_percent)."""
    return int(math.floor(NUM_TRAIN_TIMESTEPS * min_percent + 1e-9))


def annealed_timestep(kind: TimestepSchedule, step: int, total: int, t_min: int, t_max: int = T_MAX) -> int:
    """Deterministic t(i) for the 'sqrt' (HiFA), 'linear' and 'cosine' schedules at 1-based step i."""
    progress = min(max(step / total, 0.0), 1.0)
    if kind == "sqrt":
        frac = 1.0 - math.sqrt(progress)
    elif kind == "linear":
        frac = 1.0 - progress
    elif kind == "cosine":
        frac = (1.0 + math.cos(math.pi * progress)) / 2.0
    else:
        raise ValueError(f"{kind!r} is not a deterministic schedule; expected sqrt, linear or cosine")
    # The epsilon keeps exact grid values (e.g. 590.0) from flooring one step low.
    return int(math.floor(t_min + (t_max - t_min) * frac + 1e-9))


def sample_timesteps(
    kind: TimestepSchedule, step: int, total: int, batch: int, t_min: int, t_max: int = T_MAX, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Timesteps (batch,) for training step `step` of `total` under a schedule."""
    if kind == "uniform":  # SDS: uniform on {20..980}, fresh per item
        return torch.randint(20, T_MAX + 1, (batch,), generator=generator)
    if kind == "random":  # HiFA's ablation: floor(20 + 960 U), one per step
        u = torch.rand((), generator=generator, dtype=torch.float64)
        return torch.full((batch,), int(math.floor(20 + 960 * float(u))), dtype=torch.long)
    return torch.full((batch,), annealed_timestep(kind, step, total, t_min, t_max), dtype=torch.long)


def depth_weight_factor(step: int, total: int) -> float:
    """1 - sqrt(i/N): the anneal of the depth weight, by training progress in every preset."""
    return 1.0 - math.sqrt(min(max(step / total, 0.0), 1.0))


def ramp(step: int, total: int) -> float:
    """r(i) = min(1, 2i/N)."""
    return min(1.0, 2.0 * step / total)
