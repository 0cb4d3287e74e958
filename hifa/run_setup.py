"""Builders that turn config sections into live objects: the device, the renderer, the prior and the depth estimator."""

from __future__ import annotations

import torch

from hifa.background import BackgroundMLP
from hifa.config import PriorConfig, TrainConfig
from hifa.errors import HifaError
from hifa.field import NeRFField
from hifa.renderer import Renderer


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit CUDA device must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise HifaError(f"device {spec!r} was asked for but CUDA is not available here; use --set device=cpu")
    return torch.device(spec)


def build_renderer(config: TrainConfig) -> Renderer:
    """Field, background (per field kind, method.md §2) and renderer."""
    octaves, hidden = (4, 16) if config.field.kind == "hifa" else (6, 32)
    return Renderer(NeRFField(config.field), BackgroundMLP(octaves, hidden), config.renderer)


def build_prior(config: PriorConfig, device: torch.device | str | None = None):
    """The oracle prior or Stable Diffusion (loaded by the real diffusers loaders) on `device` (None: CUDA if any)."""
    if config.kind == "oracle":
        from hifa.guidance.oracle import OraclePrior

        return OraclePrior(config.oracle)
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    return StableDiffusionPrior(StableDiffusionConfig(model=config.model, precision=config.precision, device=None if device is None else str(device),
                                                        channels_last=config.channels_last, compile=config.compile, compile_mode=config.compile_mode,
                                                        compile_encoder=config.compile_encoder, vae_attention=config.vae_attention,
                                                        decoder_compile_mode=config.decoder_compile_mode))


def build_estimator(config: TrainConfig, prior, device: torch.device | str | None = None):
    """The oracle's ground-truth disparity in the oracle world, a DPT checkpoint on `device` otherwise."""
    from hifa.depth import DPTDepthEstimator, OracleDepthEstimator

    if config.prior.kind == "oracle":
        return OracleDepthEstimator(prior)
    return DPTDepthEstimator(config.depth.model, device=device, compile=config.depth.compile, compile_mode=config.depth.compile_mode)


def compiled_parts(config: TrainConfig, device: torch.device) -> list[str]:
    """What a training on `device` compiles with torch.compile during its first steps (a one-off cost, then cached)."""
    cuda, diffusion = device.type == "cuda", config.prior.kind != "oracle"
    parts = [("the prior", cuda and diffusion and config.prior.compile),
             ("the depth model", cuda and diffusion and config.depth.compile and config.depth.weight > 0),
             ("the render and loss math", config.renderer.compile)]
    return [name for name, on in parts if on]
