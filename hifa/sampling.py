"""Importance sampling with HiFA's kernel smoothing of coarse weights (method.md §3.5): pure functions."""

from __future__ import annotations

from typing import Literal

import torch

from hifa import volume

Smoothing = Literal["boxcar", "trapezoid", "naive"]
SMOOTHINGS = ("boxcar", "trapezoid", "naive")
KERNELS = {"boxcar": (1 / 3, 1 / 3, 1 / 3), "trapezoid": (1 / 8, 3 / 4, 1 / 8)}
BIN_WEIGHT_EPS = 1e-5
CDF_EPS = 1e-5


def smooth_pmf(pmf: torch.Tensor, kind: Smoothing) -> torch.Tensor:
    """Smooth a (R, n) pmf with a 3-tap kernel, zero-padded at the ray ends, renormalised to 1."""
    if kind == "naive":
        return pmf
    if kind not in KERNELS:
        raise ValueError(f"unknown smoothing {kind!r}; expected one of {SMOOTHINGS}")
    left, centre, right = KERNELS[kind]
    padded = torch.nn.functional.pad(pmf, (1, 1))
    smoothed = left * padded[:, :-2] + centre * padded[:, 1:-1] + right * padded[:, 2:]
    return smoothed / smoothed.sum(-1, keepdim=True)


def bin_pmf(z: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor, kind: Smoothing) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin edges m_k = z_k + delta_k/2 (k < T-1) and the smoothed pmf of w_1..w_{T-2} (+1e-5)."""
    edges = z[:, :-1] + delta[:, :-1] / 2.0
    w = weights[:, 1:-1] + BIN_WEIGHT_EPS
    return edges, smooth_pmf(w / w.sum(-1, keepdim=True), kind)


def invert_cdf(edges: torch.Tensor, pmf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Samples (R, F) at CDF values u from the piecewise-linear CDF over `edges` (R, n+1)."""
    cdf = torch.cat([torch.zeros_like(pmf[:, :1]), torch.cumsum(pmf, dim=-1)], dim=-1)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True)
    below = (above - 1).clamp(min=0)
    above = above.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    z_lo, z_hi = edges.gather(-1, below), edges.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < CDF_EPS, torch.ones_like(denom), denom)
    return z_lo + (u - cdf_lo) / denom * (z_hi - z_lo)


def fine_u(rays: int, count: int, deterministic: bool, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """CDF values of fine samples: (j + 1/2)/F at evaluation, i.i.d. U(0,1) in training."""
    if deterministic:
        u = (torch.arange(count, device=like.device, dtype=like.dtype) + 0.5) / count
        return u.expand(rays, count)
    return torch.rand(rays, count, device=like.device, dtype=like.dtype, generator=generator)


@torch.no_grad()
def importance_samples(
    z: torch.Tensor,
    delta: torch.Tensor,
    weights: torch.Tensor,
    count: int,
    kind: Smoothing,
    deterministic: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """F fine z values per ray drawn from the smoothed coarse weights (no gradient)."""
    edges, pmf = bin_pmf(z, delta, weights, kind)
    return invert_cdf(edges, pmf, fine_u(z.shape[0], count, deterministic, z, generator))


def fine_z(
    z_coarse: torch.Tensor, sigma_coarse: torch.Tensor, last: torch.Tensor, kind: Smoothing, u: torch.Tensor
) -> torch.Tensor:
    """Fine z values (R, F) at CDF values u from the smoothed weights of the coarse samples (no gradient wanted)."""
    delta = volume.deltas(z_coarse, last)
    _, weights = volume.alpha_weights(sigma_coarse, delta)
    return invert_cdf(*bin_pmf(z_coarse, delta, weights, kind), u)
