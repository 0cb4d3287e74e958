"""View-dependent conditioning (method.md §4.7): DreamFusion suffixes, Perp-Neg weights, guided noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SUFFIXES = {"front": "front view", "side": "side view", "back": "back view", "overhead": "overhead view"}
PERPNEG_SKIP = 1e-4


def view_prompt(prompt: str, label: str) -> str:
    """'<prompt>, front view' and so on (DreamFusion's view suffix)."""
    return f"{prompt}, {SUFFIXES[label]}"


@dataclass(frozen=True)
class PerpNegPlan:
    """For one camera: the positive as a mix of two views, and two weighted negative views."""

    positive: tuple[tuple[str, float], tuple[str, float]]  # ((view, r), (view, 1 - r))
    negatives: tuple[str, str]
    weights: tuple[float, float]


def perpneg_plan(azimuth_deg: float, front_neg: float = -2.0, side_neg: float = 2.0, back_neg: float = 10.0) -> PerpNegPlan:
    """Perp-Neg interpolation and negative weights at azimuth a (constants -2, 2, 10 of the reference)."""
    a = 180.0 - ((180.0 - azimuth_deg) % 360.0)  # wrap to (-180, 180]
    # Python floats where the reference computes in float32 (method.md §10): the table of §8.12 holds to 1e-5,
    # and at the break points (|a| = 18, 72, 108 deg) each comparison falls on the reference's side.
    if -90.0 <= a < 90.0:
        r = 1.0 - abs(a) / 90.0
        w_front = 0.0 if r > 0.8 else front_neg * math.exp(-side_neg * r)
        w_side = 0.0 if r < 0.2 else front_neg * math.exp(-back_neg * (1.0 - r))
        return PerpNegPlan((("front", r), ("side", 1.0 - r)), ("front", "side"), (w_front, w_side))
    r = 1.0 - (abs(a) - 90.0) / 90.0
    w_side = 0.0 if r > 0.8 else -math.exp(-back_neg * r)
    return PerpNegPlan((("side", r), ("back", 1.0 - r)), ("side", "front"), (w_side, front_neg))


def perpendicular(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The part of x orthogonal to y, per item (inner products over each item's whole tensor)."""
    dims = tuple(range(1, x.dim()))
    coef = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp(min=1e-6)
    return x - coef * y


def guided_eps(
    eps_uncond: torch.Tensor,
    eps_positive: torch.Tensor,
    scale: float,
    eps_negatives: list[torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """eps_u + s [D0 + sum_j w_j perp(D_j, D0)], D_j = eps_j - eps_u; plain CFG without negatives.

    weights: (B, n_negatives); terms with |w| <= 1e-4 are skipped as in the reference.
    """
    delta0 = eps_positive - eps_uncond
    total = delta0
    for j, eps_j in enumerate(eps_negatives or []):
        w = weights[:, j].to(delta0.dtype).view(-1, *([1] * (delta0.dim() - 1)))
        w = torch.where(w.abs() > PERPNEG_SKIP, w, torch.zeros_like(w))
        total = total + w * perpendicular(eps_j - eps_uncond, delta0)
    return eps_uncond + scale * total
