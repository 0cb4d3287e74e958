"""Operator dispatches per phase of one training step: the host's share of a GPU step, counted on any machine.

A 'hifa-fast' step on an H100 runs about 85 ms of kernels in its 130 ms (benchmarks/results/bench-cuda.md,
session 14): the rest is host time, dispatching operators one by one and waiting. An eager operator's host cost
on CUDA hardly depends on its size, so the count per phase is a machine-independent measure of that
overhead. The diffusion networks' forward passes are counted apart ('prior networks'): the fast set
compiles them on CUDA, where they dispatch far fewer operators than their eager count here.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _Counter(TorchDispatchMode):
    """Counts every aten operator call under the current phase label."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "other"
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.phase] += 1
        return func(*args, **(kwargs or {}))


def _labelled(counter: _Counter, name: str, fn: Callable) -> Callable:
    def call(*args, **kwargs):
        outer, counter.phase = counter.phase, name
        try:
            return fn(*args, **kwargs)
        finally:
            counter.phase = outer
    return call


@contextlib.contextmanager
def _phases(trainer, counter: _Counter) -> Iterator[None]:
    """Label the trainer's render, guidance, depth, backward and optimiser calls for the duration."""
    targets = [(trainer.renderer, "forward", "render"), (trainer.guidance, "loss", "guidance"), (trainer.optimizer, "step", "optimizer")]
    if trainer.estimator is not None:
        targets.append((trainer.estimator, "estimate", "depth"))
    # The diffusion networks run compiled (the UNet as CUDA graphs) in the fast set on CUDA: counted apart.
    for name in ("unet", "vae"):
        module = getattr(trainer.prior, name, None)
        for part in ((module,) if name == "unet" else (getattr(module, "encoder", None), getattr(module, "decoder", None))):
            if part is not None:
                targets.append((part, "forward", "prior networks"))
    missing = object()
    saved = [(obj, attr, vars(obj).get(attr, missing)) for obj, attr, _ in targets]  # an instance's own attribute, if any
    backward = torch.Tensor.backward
    try:
        for obj, attr, name in targets:
            setattr(obj, attr, _labelled(counter, name, getattr(obj, attr)))
        torch.Tensor.backward = _labelled(counter, "backward", backward)
        yield
    finally:
        torch.Tensor.backward = backward
        for obj, attr, before in saved:
            if before is missing:
                vars(obj).pop(attr, None)  # back to the class's method
            else:
                setattr(obj, attr, before)


def dispatches_per_phase(trainer, step: int) -> dict[str, int]:
    """Operator dispatches of `trainer.training_step(step)` by phase, and their total."""
    counter = _Counter()
    with _phases(trainer, counter), counter:
        trainer.training_step(step)
    return {**dict(counter.counts.most_common()), "total": sum(counter.counts.values())}
