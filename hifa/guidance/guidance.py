"""The two guidance methods behind one interface: loss(images, prompt, cameras, step) -> terms.

SDS (DreamFusion, method.md §4.2) and HiFA's denoising residual in latent and image
space with iterative denoising and timestep annealing (§4.3-4.6), over any prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from hifa.cameras import Cameras
from hifa.errors import require
from hifa.guidance import losses
from hifa.guidance.denoise import DenoiseMode, denoise
from hifa.guidance.prior import VIEW_MODES, DiffusionPrior, ViewMode, guided_noise
from hifa.guidance.schedules import TIMESTEP_SCHEDULES, TimestepSchedule, sample_timesteps, t_min_from_percent
from hifa.transfer import to_device

Method = Literal["hifa", "sds"]


@dataclass(frozen=True)
class GuidanceConfig:
    """Guidance settings; defaults are the 'hifa' preset of method.md §7.2."""

    method: Method = "hifa"
    guidance_scale: float = 100.0
    view_mode: ViewMode = "perpneg"
    schedule: TimestepSchedule = "sqrt"
    min_percent: float = 0.2
    sds_weighting: losses.SdsWeighting = "sds"
    hifa_weighting: losses.HifaWeighting = "constant"
    omega: float = 0.05
    lambda_latent: float = 1.0
    lambda_rgb: float = 0.1
    denoising_steps: int = 4
    denoise_mode: DenoiseMode = "ddim"
    eta: float = 1.0

    def __post_init__(self) -> None:
        require(self.method in ("hifa", "sds"), "guidance.method", f"must be 'hifa' or 'sds', got {self.method!r}")
        require(self.guidance_scale >= 0, "guidance.guidance_scale", "must be >= 0")
        require(self.view_mode in VIEW_MODES, "guidance.view_mode", f"must be one of {VIEW_MODES}")
        require(self.schedule in TIMESTEP_SCHEDULES, "guidance.schedule", f"must be one of {TIMESTEP_SCHEDULES}")
        require(0.0 <= self.min_percent < 0.98, "guidance.min_percent", "must lie in [0, 0.98)")
        require(self.denoising_steps >= 1, "guidance.denoising_steps", "must be >= 1")
        require(self.denoise_mode in ("ddim", "x0"), "guidance.denoise_mode", "must be 'ddim' or 'x0'")
        require(0.0 <= self.eta <= 1.0, "guidance.eta", "must lie in [0, 1]")
        require(self.lambda_latent >= 0 and self.lambda_rgb >= 0, "guidance.lambda_latent", "loss weights must be >= 0")


@dataclass
class GuidanceOutput:
    """Named loss terms (summed by the trainer) and diagnostics for logging and depth supervision."""

    terms: dict[str, torch.Tensor]
    t: torch.Tensor  # on the host
    weight: torch.Tensor
    x_hat: torch.Tensor | None = None  # denoised estimate in image space, (B, 3, S, S)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def to_prior_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (align_corners false) of (B, 3, h, w) renders to the prior's input size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class Guidance:
    """SDS or HiFA guidance over a prior."""

    def __init__(self, prior: DiffusionPrior, config: GuidanceConfig):
        self.prior, self.config = prior, config

    def loss(
        self, images: torch.Tensor, prompt: str, cameras: Cameras, step: int, total_steps: int, generator: torch.Generator | None = None
    ) -> GuidanceOutput:
        """Loss terms for renders (B, 3, h, w) in [0, 1] at 1-based training step `step` of `total_steps`."""
        cfg = self.config
        cond = self.prior.conditions(prompt, cameras, cfg.view_mode)
        x = to_prior_size(images, self.prior.image_size)
        latents = self.prior.encode(x, generator)
        batch, device = latents.shape[0], latents.device
        # t and everything drawn or indexed by it are made on the host and copied without a stream sync (hifa.transfer):
        # the host reads t for the schedule and the weights without waiting for the GPU.
        t_host = sample_timesteps(cfg.schedule, step, total_steps, batch, t_min_from_percent(cfg.min_percent), generator=generator)
        t = to_device(t_host, device)
        alpha, sigma = (to_device(v.to(latents.dtype), device).view(-1, 1, 1, 1) for v in losses.alpha_sigma(self.prior.alphas_cumprod, t_host))
        noise = to_device(torch.randn(latents.shape, generator=generator, dtype=latents.dtype), device)
        noisy = alpha * latents.detach() + sigma * noise
        if cfg.method == "sds":
            return self._sds(latents, noise, noisy, t, t_host, cond)
        return self._hifa(images, x, latents, noisy, t, t_host, cond, generator)

    def _sds(self, latents, noise, noisy, t, t_host, cond) -> GuidanceOutput:
        eps_hat = guided_noise(self.prior, noisy, t, cond, self.config.guidance_scale)
        weight = to_device(losses.sds_weight(self.prior.alphas_cumprod, t_host, self.config.sds_weighting), latents.device)
        grad = losses.sds_gradient(eps_hat, noise, weight)
        return GuidanceOutput({"sds": losses.target_trick_loss(latents, grad)}, t_host, weight)

    def _hifa(self, images, x, latents, noisy, t, t_host, cond, generator) -> GuidanceOutput:
        cfg = self.config
        tau0 = int(t_host[0])  # one timestep per step for the whole batch (method.md §4.3)

        def eps_fn(z: torch.Tensor, tau: int) -> torch.Tensor:
            return guided_noise(self.prior, z, torch.full_like(t, tau), cond, cfg.guidance_scale)

        result = denoise(eps_fn, noisy, tau0, self.prior.alphas_cumprod, cfg.denoising_steps, cfg.denoise_mode, cfg.eta, generator)
        s_res = losses.resolution_scale(images.shape[-2], images.shape[-1], self.prior.image_size)
        weight = cfg.omega * s_res * to_device(losses.hifa_weight_factor(self.prior.alphas_cumprod, t_host, cfg.hifa_weighting), latents.device)
        latent_gain, image_gain = self.prior.residual_gains
        terms = {"latent": losses.residual_loss(latents, result.z_hat, cfg.lambda_latent * latent_gain * weight)}
        x_hat = None
        if cfg.lambda_rgb > 0:
            x_hat = self.prior.decode(result.z_hat)
            terms["image"] = losses.residual_loss(x, x_hat, cfg.lambda_rgb * image_gain * weight)
        extras = {"denoise_calls": torch.tensor(len(result.visited))}
        return GuidanceOutput(terms, t_host, weight, x_hat, extras)
