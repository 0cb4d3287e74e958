"""The oracle's view priors over a bank of renders: by angle to the camera, or by a view label's sector (design.md §4)."""

from __future__ import annotations

import numpy as np
import torch

from hifa.cameras import view_label


def view_angles(views: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Angles (radians) between views (B, 3) and bank directions (K, 3): (B, K)."""
    cos = (torch.nn.functional.normalize(views, dim=-1) @ directions.T).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def angle_log_prior(views: torch.Tensor, directions: torch.Tensor, tau_rad: float, cutoff_rad: float | None = None) -> torch.Tensor:
    """log pi_k = -angle(v, c_k)^2 / (2 tau^2), and -inf beyond the cut-off angle (the nearest view always stays)."""
    angles = view_angles(views, directions)
    log_prior = -(angles**2) / (2 * tau_rad**2)
    if cutoff_rad is not None:
        keep = angles <= cutoff_rad
        keep[torch.arange(len(angles)), angles.argmin(-1)] = True
        log_prior = log_prior.masked_fill(~keep, float("-inf"))
    return log_prior


def bank_labels(directions: torch.Tensor) -> list[str]:
    """DreamFusion's view label of each bank direction (K, 3)."""
    polar = torch.rad2deg(torch.arccos(directions[:, 1].clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(directions[:, 0], directions[:, 2]))
    return [view_label(float(a), float(p)) for a, p in zip(azimuth, polar)]


def sector_log_prior(
    views: torch.Tensor, directions: torch.Tensor, sector: list[str], labels: list[str], tau_rad: float, cutoff_rad: float | None
) -> torch.Tensor:
    """log pi_k for a suffix: bank views with the item's label, weighted by elevation difference (B, K).

    The label names a sector of azimuths; the camera's elevation is kept (-dpolar^2 / 2 tau^2, -inf
    beyond the cut-off), and the view of the sector nearest in elevation always stays.
    """
    polar = lambda d: torch.arccos(torch.nn.functional.normalize(d, dim=-1)[:, 1].clamp(-1.0, 1.0))  # noqa: E731
    dpolar = (polar(views)[:, None] - polar(directions)[None]).abs()
    same = torch.from_numpy(np.asarray(sector)[:, None] == np.asarray(labels)[None, :])
    log_prior = (-(dpolar**2) / (2 * tau_rad**2)).masked_fill(~same, float("-inf"))
    if cutoff_rad is not None:
        nearest = dpolar.masked_fill(~same, float("inf")).argmin(-1)
        keep = dpolar <= cutoff_rad
        keep[torch.arange(len(keep)), nearest] = True
        log_prior = log_prior.masked_fill(~keep, float("-inf"))
    return log_prior
