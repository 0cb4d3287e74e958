"""Iterative denoising of the noised latent (method.md §4.5): one step, strided DDIM, or last x0."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from hifa.transfer import to_device

DenoiseMode = Literal["ddim", "x0"]
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class DenoiseResult:
    """The denoised latent z-hat, and the timesteps at which the noise predictor was called."""

    z_hat: torch.Tensor
    visited: list[int] = field(default_factory=list)
    x0: torch.Tensor | None = None  # the last call's x0 prediction


def x0_from_eps(z_t: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    """x0 = (z_t - sqrt(1 - abar) eps) / sqrt(abar)."""
    return (z_t - (1.0 - abar) ** 0.5 * eps) / abar**0.5


@torch.no_grad()
def denoise(
    eps_fn: EpsFn,
    z_t: torch.Tensor,
    t: int,
    alphas_cumprod: torch.Tensor,
    steps: int = 4,
    mode: DenoiseMode = "ddim",
    eta: float = 1.0,
    generator: torch.Generator | None = None,
) -> DenoiseResult:
    """z-hat from z_t at integer t with K = `steps`: stride 1000 // K, calls at t, t - S, ... >= 0."""
    if steps < 1:
        raise ValueError(f"denoising steps must be >= 1, got {steps}")
    abar = alphas_cumprod.tolist()  # one conversion, not one .item() per timestep (1000 a step)
    if steps == 1:
        eps = eps_fn(z_t, t)
        x0 = x0_from_eps(z_t, eps, abar[t])
        return DenoiseResult(x0, [t], x0)
    stride = len(abar) // steps
    z, tau, visited, x0 = z_t, t, [], None
    while tau >= 0:
        eps = eps_fn(z, tau)
        visited.append(tau)
        x0 = x0_from_eps(z, eps, abar[tau])
        nxt = tau - stride
        # set_alpha_to_one is false in SD: past the end, the final step lands on abar_0.
        abar_next = abar[nxt] if nxt >= 0 else abar[0]
        var = eta**2 * (1 - abar_next) / (1 - abar[tau]) * (1 - abar[tau] / abar_next)
        z = abar_next**0.5 * x0 + max(1 - abar_next - var, 0.0) ** 0.5 * eps
        if var > 0:
            # Drawn where the generator lives (the trainer's is on the CPU), then moved to the latents.
            where = generator.device if generator is not None else z.device
            z = z + var**0.5 * to_device(torch.randn(z.shape, generator=generator, device=where, dtype=z.dtype), z.device)
        tau = nxt
    return DenoiseResult(z if mode == "ddim" else x0, visited, x0)
