"""What a diffusion prior offers guidance: encode/decode, conditioning, and noise prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from hifa.cameras import Cameras
from hifa.guidance.views import guided_eps

ViewMode = Literal["perpneg", "suffix", "none"]
VIEW_MODES = ("perpneg", "suffix", "none")


@dataclass
class Conditioning:
    """Prior-specific handles for one batch: unconditional, positive, Perp-Neg negatives and weights."""

    uncond: Any
    positive: Any
    negatives: list[Any]
    weights: torch.Tensor | None  # (B, len(negatives)) or None without negatives


class DiffusionPrior(Protocol):
    """A frozen denoiser with an epsilon-prediction interface on a DDPM schedule."""

    alphas_cumprod: torch.Tensor  # (1000,) float64
    image_size: int  # the diffusion model's input resolution
    # (latent, image): what HiFA's L_lat and L_rgb sums are multiplied by to be in the reference's units
    # (Stable Diffusion's latent and its decoded image): (1, 1) for Stable Diffusion itself.
    residual_gains: tuple[float, float]

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] to latents, with gradient; a sampling encoder draws from `generator`."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to (B, 3, S, S) images in [0, 1], without gradient."""

    def conditions(self, prompt: str, cameras: Cameras, view_mode: ViewMode) -> Conditioning:
        """The conditioning handles of a prompt seen from each camera."""

    def predict_eps(self, latents: torch.Tensor, t: torch.Tensor, handles: list[Any]) -> list[torch.Tensor]:
        """Noise predictions at timesteps t (B,) for each conditioning handle, in one batch."""


@torch.no_grad()
def guided_noise(prior: DiffusionPrior, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, scale: float) -> torch.Tensor:
    """Classifier-free guidance (with Perp-Neg negatives when present) of the prior's noise estimate."""
    eps = prior.predict_eps(latents, t, [cond.uncond, cond.positive, *cond.negatives])
    return guided_eps(eps[0], eps[1], scale, eps[2:], cond.weights)
