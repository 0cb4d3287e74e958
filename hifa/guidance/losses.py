"""Guidance losses as pure functions: SDS with the target trick, HiFA's latent and image losses (method.md §4)."""

from __future__ import annotations

from typing import Literal

import torch

SdsWeighting = Literal["sds", "uniform"]
HifaWeighting = Literal["constant", "noisematch", "sdslike", "strongerlower"]


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) at integer timesteps t."""
    abar = alphas_cumprod.to(t.device)[t]
    return abar.sqrt(), (1.0 - abar).sqrt()


def sds_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: SdsWeighting = "sds") -> torch.Tensor:
    """w(t): 1 - abar_t ('sds', DreamFusion) or 1 ('uniform')."""
    if kind == "sds":
        return 1.0 - alphas_cumprod.to(t.device)[t]
    if kind == "uniform":
        return torch.ones_like(t, dtype=alphas_cumprod.dtype)
    raise ValueError(f"unknown SDS weighting {kind!r}")


def hifa_weight_factor(alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: HifaWeighting = "constant") -> torch.Tensor:
    """f(t) multiplying omega = 0.05 (method.md §4.8): 1, alpha/sigma, alpha*sigma or alpha^2/sigma."""
    alpha, sigma = alpha_sigma(alphas_cumprod, t)
    factors = {
        "constant": torch.ones_like(alpha),
        "noisematch": alpha / sigma,
        "sdslike": alpha * sigma,
        "strongerlower": alpha**2 / sigma,
    }
    if kind not in factors:
        raise ValueError(f"unknown HiFA weighting {kind!r}; expected one of {tuple(factors)}")
    return factors[kind]


def sds_gradient(eps_hat: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """g = w(t) (eps_hat - eps) per item (weight (B,)), NaNs set to 0."""
    w = weight.to(eps_hat.dtype).view(-1, *([1] * (eps_hat.dim() - 1)))
    return torch.nan_to_num(w * (eps_hat - eps), nan=0.0)


def target_trick_loss(latents: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """L = 1/2 |z - sg(z - g)|^2 / B: its gradient w.r.t. z is exactly g / B."""
    target = (latents - gradient).detach()
    return 0.5 * ((latents - target) ** 2).sum() / latents.shape[0]


def residual_loss(x: torch.Tensor, target: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """weight * 1/2 * sum (x - sg(target))^2 (HiFA's L_lat on latents, L_rgb on 512^2 images)."""
    if isinstance(weight, torch.Tensor):
        weight = weight.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (weight * 0.5 * (x - target.detach()) ** 2).sum()


def resolution_scale(height: int, width: int, diffusion_size: int) -> float:
    """s_res = h*w / size^2: 1 at the diffusion size, 0.25 at half of it."""
    return height * width / float(diffusion_size**2)


# What HiFA's residual losses sum over in the reference: Stable Diffusion's 4 x 64 x 64 latent (scaled to
# unit variance) and its 512^2 decoded image.
SD_LATENT_ELEMENTS = 4 * 64 * 64
SD_IMAGE_SIZE = 512


def residual_gains(resolution: int, pixel_std: float) -> tuple[float, float]:
    """(latent, image) gains that put L_lat and L_rgb summed over one r^2 RGB image in the reference's units.

    L_lat: as many terms as SD's latent, each in unit-variance units: 4*64^2 / (3 r^2) / std^2.
    L_rgb: as many pixels as SD's 512^2 image: (512 / r)^2. The oracle world's (method.md §9 [P]):
    without them its guidance is ~18x weaker against the depth term and regularisers than in the reference.
    """
    latent = SD_LATENT_ELEMENTS / (3 * resolution**2) / pixel_std**2
    return latent, (SD_IMAGE_SIZE / resolution) ** 2
