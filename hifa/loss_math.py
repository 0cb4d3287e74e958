"""The trainer's regularisers and depth losses on a render's outputs, eager or compiled (renderer.compile)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hifa import regularisers
from hifa.compiled import CompilableMath
from hifa.depth import pearson_depth_loss, ssi_depth_loss


@dataclass(frozen=True)
class LossMath(CompilableMath):
    """Each loss on the render's per-ray and per-sample outputs; the trainer applies the weights and schedules (outside:
    a Python float that changes would recompile a compiled loss)."""

    zvar: Callable = regularisers.zvar_loss
    z_entropy: Callable = regularisers.z_entropy_loss
    monotonicity: Callable = regularisers.monotonicity_loss
    opacity_entropy: Callable = regularisers.opacity_entropy_loss
    sample_entropy: Callable = regularisers.sample_entropy_loss
    ssi_depth: Callable = ssi_depth_loss
    pearson_depth: Callable = pearson_depth_loss
