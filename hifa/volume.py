"""Volume-rendering math along rays (method.md §3.3, §3.4, §3.6, §5.2): pure functions.

Shapes: R rays, K samples per ray; z values are planar depths along unnormalised rays.
"""

from __future__ import annotations

import torch

TRANSMITTANCE_EPS = 1e-15


def near_far(origins: torch.Tensor, bound: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """near = |o| - bound, far = |o| + bound, each (R,)."""
    dist = origins.norm(dim=-1)
    return dist - bound, dist + bound


def coarse_z(near: torch.Tensor, far: torch.Tensor, count: int, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """z_k = near + (far - near) k/(T-1); with jitter xi in [0,1), shifted by (xi - 1/2) (far - near)/T."""
    steps = torch.linspace(0.0, 1.0, count, device=near.device, dtype=near.dtype)
    z = near[:, None] + (far - near)[:, None] * steps
    if jitter is not None:
        z = z + (jitter - 0.5) * ((far - near) / count)[:, None]
    return z


def deltas(z: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """delta_k = z_{k+1} - z_k with the last interval set to `last` (R,)."""
    return torch.cat([z[:, 1:] - z[:, :-1], last[:, None].expand(-1, 1)], dim=-1)


def alpha_weights(sigma: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_k = 1 - exp(-sigma_k delta_k); w_k = alpha_k prod_{j<k} (1 - alpha_j + 1e-15)."""
    alpha = 1.0 - torch.exp(-sigma * delta)
    shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + TRANSMITTANCE_EPS], dim=-1)
    return alpha, alpha * torch.cumprod(shifted, dim=-1)


def composite(weights: torch.Tensor, values: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k v_k (+ (1 - O) background): (R, C) from (R, K, C)."""
    out = (weights[..., None] * values).sum(-2)
    if background is not None:
        out = out + (1.0 - weights.sum(-1, keepdim=True)) * background
    return out


def expected_depth(weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sum_k w_k z_k, not divided by the opacity (method.md §3.6)."""
    return (weights * z).sum(-1)


def sample_pdf_density(weights: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """pdf_k = w_k / max(delta_k, 1e-5), not divided by the opacity."""
    return weights / delta.clamp(min=1e-5)


def z_variance(weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-ray variance of z under w / max(O, 1e-5) (method.md §5.2), (R,)."""
    w_hat = weights / weights.sum(-1, keepdim=True).clamp(min=1e-5)
    mean = (w_hat * z).sum(-1, keepdim=True)
    return (w_hat * (z - mean) ** 2).sum(-1)


def merge_samples(
    z_a: torch.Tensor, z_b: torch.Tensor, values_a: tuple[torch.Tensor, ...], values_b: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Two sample sets of each ray merged in z order: sorted z (R, Ka + Kb) and each (R, K, ...) value gathered alike."""
    z, order = torch.sort(torch.cat([z_a, z_b], dim=-1), dim=-1)
    merged = []
    for a, b in zip(values_a, values_b):
        both = torch.cat([a, b], dim=1)
        merged.append(both.gather(1, order.view(*order.shape, *([1] * (both.dim() - 2))).expand_as(both)))
    return z, tuple(merged)


def ray_weights(z: torch.Tensor, sigma: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intervals delta (last one `last`) and weights w of samples (R, K)."""
    delta = deltas(z, last)
    return delta, alpha_weights(sigma, delta)[1]


def ray_outputs(
    weights: torch.Tensor, z: torch.Tensor, delta: torch.Tensor, color: torch.Tensor, background: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-ray image (clamped to [0, 1]) over a background (R, 3), depth, opacity, z variance, and the per-sample pdf."""
    return {
        "image": composite(weights, color, background).clamp(0.0, 1.0),
        "depth": expected_depth(weights, z),
        "opacity": weights.sum(-1),
        "pdf": sample_pdf_density(weights, delta),
        "z_variance": z_variance(weights, z),
    }
