"""Geometry regularisers on renderer outputs (method.md §5.2-§5.6): pure functions.

Shapes: R rays, K samples per ray; `weights`, `z_vals`, `deltas` are (R, K), `opacity` and
`orient` are (R,). Each function returns the unweighted term; the trainer multiplies by the
term's weight and schedule (3·r(i), 10⁻²·r(i), 1.0, 10⁻⁴, ...).
"""

from __future__ import annotations

import torch

from hifa import volume

ZVAR_OPACITY_THRESHOLD = 0.5
PDF_FLOOR = 1e-5
ENTROPY_CLAMP = 1e-5


def zvar_loss(weights: torch.Tensor, z_vals: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Sum over rays of the per-ray z variance on rays with O > 0.5 (mask not differentiated, §5.2)."""
    mask = (opacity.detach() > ZVAR_OPACITY_THRESHOLD).to(weights.dtype)
    return (volume.z_variance(weights, z_vals) * mask).sum()


def z_entropy_loss(weights: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """mean_rays(H·sg(O)), H = -Σ_k ŵ_k log max(w_k/max(δ_k, 1e-5), 1e-5) with ŵ = w/max(O, 1e-5) (§5.3)."""
    opacity = weights.sum(-1)
    w_hat = weights / opacity.clamp(min=1e-5)[:, None]
    pdf = volume.sample_pdf_density(weights, deltas).clamp(min=PDF_FLOOR)
    entropy = -(w_hat * pdf.log()).sum(-1)
    return (entropy * opacity.detach()).mean()


def monotonicity_loss(weights: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Penalty on pdf decreases up to its first argmax and increases after it, zero-padded ends (§5.4)."""
    pdf = volume.sample_pdf_density(weights, deltas)
    peak = pdf.detach().argmax(-1, keepdim=True)  # torch returns the first maximum
    padded = torch.nn.functional.pad(pdf, (1, 1))
    diff = padded[:, 1:] - padded[:, :-1]  # Δ_k = pdf_k - pdf_{k-1}, k = 0..M: (R, M + 1)
    k = torch.arange(diff.shape[-1], device=pdf.device)[None, :]
    rising = k <= peak
    penalty_before = torch.where(rising, torch.relu(-diff), torch.zeros_like(diff))
    penalty_after = torch.where(rising, torch.zeros_like(diff), torch.relu(diff))
    return penalty_before.mean() + penalty_after.mean()


def binary_entropy(q: torch.Tensor) -> torch.Tensor:
    """b(q) = -q log2 q - (1-q) log2(1-q) with q clamped to [1e-5, 1 - 1e-5] (§5.5)."""
    q = q.clamp(ENTROPY_CLAMP, 1.0 - ENTROPY_CLAMP)
    return -q * torch.log2(q) - (1.0 - q) * torch.log2(1.0 - q)


def opacity_entropy_loss(opacity: torch.Tensor) -> torch.Tensor:
    """mean_rays b(O): HiFA's opacity entropy (§5.5)."""
    return binary_entropy(opacity).mean()


def sample_entropy_loss(weights: torch.Tensor) -> torch.Tensor:
    """mean over rays × samples of b(w_k): stable-dreamfusion's `lambda_entropy` (§5.5)."""
    return binary_entropy(weights).mean()


def orientation_loss(orient: torch.Tensor) -> torch.Tensor:
    """mean_rays of the renderer's per-ray Σ_k sg(w_k)·max(0, n_k·d)² (§5.6)."""
    return orient.mean()
