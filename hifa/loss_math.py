"""The trainer's regularisers and depth losses on a render's outputs, eager or compiled (renderer.compile)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hifa import regularisers
from hifa.compiled import compiled_defaults
from hifa.depth import pearson_depth_loss, ssi_depth_loss


@dataclass(frozen=True)
class LossMath:
    """Each loss on the render's per-ray and per-sample outputs; the trainer applies the weights and schedules."""

    zvar: Callable = regularisers.zvar_loss
    z_entropy: Callable = regularisers.z_entropy_loss
    monotonicity: Callable = regularisers.monotonicity_loss
    opacity_entropy: Callable = regularisers.opacity_entropy_loss
    sample_entropy: Callable = regularisers.sample_entropy_loss
    ssi_depth: Callable = ssi_depth_loss
    pearson_depth: Callable = pearson_depth_loss

    @classmethod
    def compile(cls) -> LossMath:
        """Each function compiled (weights stay outside: a Python float that changes would recompile)."""
        return compiled_defaults(cls)
