"""Operator dispatches per phase of one training step: the host's share of a GPU step, counted on any machine.

A 'hifa-fast' step on an H100 runs about 85 ms of kernels in its 130 ms (benchmarks/results/bench-cuda.md,
session 14): the rest is host time, dispatching operators one by one and waiting. An eager operator's host cost
on CUDA hardly depends on its size, so the count per phase is a machine-independent measure of that
overhead. Counted: the aten operators called from Python or from autograd, not those they call in turn, read
off the profiler, so torch.compiled code counts the operators its generated code calls (matmuls, sorts), not
its fused kernels. Not counted: a compiled function's own host cost (guards, its wrapper, its kernel
launches), so fewer operators bound the saving from above rather than measure it. The diffusion networks'
forward passes are counted apart ('prior networks'): the fast set compiles them on CUDA, where they dispatch
far fewer operators than their eager count here. CPU only: on CUDA, autograd runs the backward on its own
threads, whose operators the profiler does not nest under the 'backward' label.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import torch

LABEL = "phase:"  # prefix of the profiler ranges that name a phase


def _labelled(name: str, fn: Callable) -> Callable:
    def call(*args, **kwargs):
        with torch.profiler.record_function(LABEL + name):
            return fn(*args, **kwargs)
    return call


@contextlib.contextmanager
def phases(trainer, networks: bool = True) -> Iterator[None]:
    """Label the trainer's render, guidance, depth, backward and optimiser calls (profiler ranges) for the duration.

    networks: label the diffusion networks' forward passes too ('prior networks', inside 'guidance'). Leave them
    out where they run compiled: a new forward on a compiled module would compile it again.
    """
    targets = [(trainer.renderer, "forward", "render"), (trainer.guidance, "loss", "guidance"), (trainer.optimizer, "step", "optimizer")]
    if trainer.estimator is not None:
        targets.append((trainer.estimator, "estimate", "depth"))
    # The diffusion networks run compiled (the UNet as CUDA graphs) in the fast set on CUDA: counted apart.
    for name in ("unet", "vae") if networks else ():
        module = getattr(trainer.prior, name, None)
        for part in ((module,) if name == "unet" else (getattr(module, "encoder", None), getattr(module, "decoder", None))):
            if part is not None:
                targets.append((part, "forward", "prior networks"))
    missing = object()
    saved = [(obj, attr, vars(obj).get(attr, missing)) for obj, attr, _ in targets]  # an instance's own attribute, if any
    backward = torch.Tensor.backward
    try:
        for obj, attr, name in targets:
            setattr(obj, attr, _labelled(name, getattr(obj, attr)))
        torch.Tensor.backward = _labelled("backward", backward)
        yield
    finally:
        torch.Tensor.backward = backward
        for obj, attr, before in saved:
            if before is missing:
                vars(obj).pop(attr, None)  # back to the class's method
            else:
                setattr(obj, attr, before)


def dispatches_per_phase(trainer, step: int) -> dict[str, int]:
    """Operator dispatches of `trainer.training_step(step)` by phase (the innermost label), and their total."""
    with phases(trainer), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.training_step(step)
    counts: collections.Counter[str] = collections.Counter()
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        phase, parent = None, event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            if phase is None and parent.name.startswith(LABEL):
                phase = parent.name[len(LABEL):]
            parent = parent.cpu_parent
        if parent is None:  # called from Python or autograd, not from another operator
            counts[phase or "other"] += 1
    return {**dict(counts.most_common()), "total": sum(counts.values())}


def dispatch_counts(device: torch.device, preset_name: str, model: str, depth_model: str, overrides: list[str]) -> dict:
    """Operator dispatches per phase of the third training step of a benchmark trainer."""
    from benchmarks.bench import bench_trainer

    with bench_trainer(preset_name, model, depth_model, overrides) as trainer:
        for step in (1, 2):
            trainer.training_step(step)
        return dispatches_per_phase(trainer, 3)
