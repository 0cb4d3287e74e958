"""Builders that turn config sections into live objects: the prior and the depth estimator."""

from __future__ import annotations

import torch

from hifa.config import PriorConfig, TrainConfig


def build_prior(config: PriorConfig, device: torch.device | str | None = None):
    """The oracle prior or Stable Diffusion (loaded by the real diffusers loaders) on `device` (None: CUDA if any)."""
    if config.kind == "oracle":
        from hifa.guidance.oracle import OraclePrior

        return OraclePrior(config.oracle)
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    return StableDiffusionPrior(StableDiffusionConfig(model=config.model, precision=config.precision, device=None if device is None else str(device),
                                                        channels_last=config.channels_last, compile=config.compile, compile_mode=config.compile_mode,
                                                        compile_encoder=config.compile_encoder, vae_attention=config.vae_attention))


def build_estimator(config: TrainConfig, prior, device: torch.device | str | None = None):
    """The oracle's ground-truth disparity in the oracle world, a DPT checkpoint on `device` otherwise."""
    from hifa.depth import DPTDepthEstimator, OracleDepthEstimator

    if config.prior.kind == "oracle":
        return OracleDepthEstimator(prior)
    return DPTDepthEstimator(config.depth.model, device=device, compile=config.depth.compile)
