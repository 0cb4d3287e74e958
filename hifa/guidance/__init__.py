"""Diffusion guidance: SDS (DreamFusion) and HiFA's denoising-residual losses over a prior."""
