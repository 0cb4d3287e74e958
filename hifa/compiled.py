"""torch.compile for the small dense math of a training step (renderer.compile), and the renderer's share of it.

Each function runs on shapes fixed within a run (rays x samples, pixels), so each compiles once: its forward
and backward each become a few fused kernels instead of tens of operators, each dispatched by the host.
A new shape or tensor property compiles one more graph: a checkpointed render's last, shorter chunk, or a solid
background (no gradient) after the learned one. Past torch._dynamo's limit of graphs per function (8 by
default, shared by every trainer in a process) the function runs eagerly, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeVar

import torch

from hifa import sampling, volume

T = TypeVar("T")


def compiled(fn: Callable) -> Callable:
    """`fn` under torch.compile for fixed shapes (a new shape recompiles rather than going dynamic)."""
    return torch.compile(fn, dynamic=False)


class CompilableMath:
    """Base of a frozen dataclass of functions, each field's default the eager function: `Cls()` is eager,
    `Cls.compile()` has every function compiled."""

    @classmethod
    def compile(cls: type[T]) -> T:
        """An instance whose every field is its default function, compiled."""
        return cls(**{f.name: compiled(f.default) for f in fields(cls)})


@dataclass(frozen=True)
class RayMath(CompilableMath):
    """The renderer's per-sample math between its field calls."""

    fine_z: Callable = sampling.fine_z
    merge: Callable = volume.merge_samples
    weigh: Callable = volume.ray_weights
    outputs: Callable = volume.ray_outputs
