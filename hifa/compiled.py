"""The dense math of a training step, eager or torch.compiled (renderer.compile).

Each function runs on fixed shapes within a run (rays x samples, pixels), so each compiles once: its forward
and backward each become a few fused kernels instead of tens of operators, each dispatched by the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hifa import regularisers, sampling, volume
from hifa.depth import pearson_depth_loss, ssi_depth_loss


def compiled(fn: Callable) -> Callable:
    """`fn` under torch.compile for fixed shapes (a new shape recompiles rather than going dynamic)."""
    return torch.compile(fn, dynamic=False)


@dataclass(frozen=True)
class RayMath:
    """The renderer's per-sample math between its field calls."""

    fine_z: Callable = sampling.fine_z
    merge: Callable = volume.merge_samples
    weigh: Callable = volume.ray_weights
    outputs: Callable = volume.ray_outputs

    @classmethod
    def compile(cls) -> RayMath:
        """Each function compiled."""
        return cls(compiled(sampling.fine_z), compiled(volume.merge_samples), compiled(volume.ray_weights), compiled(volume.ray_outputs))


@dataclass(frozen=True)
class LossMath:
    """The trainer's regularisers and depth losses on a render's outputs."""

    zvar: Callable = regularisers.zvar_loss
    z_entropy: Callable = regularisers.z_entropy_loss
    monotonicity: Callable = regularisers.monotonicity_loss
    opacity_entropy: Callable = regularisers.opacity_entropy_loss
    sample_entropy: Callable = regularisers.sample_entropy_loss
    ssi_depth: Callable = ssi_depth_loss
    pearson_depth: Callable = pearson_depth_loss

    @classmethod
    def compile(cls) -> LossMath:
        """Each function compiled."""
        return cls(*(compiled(fn) for fn in (
            regularisers.zvar_loss, regularisers.z_entropy_loss, regularisers.monotonicity_loss, regularisers.opacity_entropy_loss,
            regularisers.sample_entropy_loss, ssi_depth_loss, pearson_depth_loss,
        )))
