"""A training step's logged values on their way to the host: read at once, or later without waiting for the GPU."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class StepValues:
    """The device values of one step (loss, gradient norm, terms, diagnostics) and what the host knew at once."""

    step: int
    lr: float
    terms: list[str]  # the loss terms among `names`
    names: list[str]
    host: torch.Tensor  # float64 (len(names),) on the host; filled by a copy that `event` marks done
    event: torch.cuda.Event | None = None
    info: dict[str, float] = field(default_factory=dict)  # diagnostics known on the host (t)
    hidden: tuple[str, ...] = ()  # values read but not logged (the sample budget's counts)
    _read: dict[str, float] | None = field(default=None, repr=False)

    def read(self) -> dict[str, float]:
        """The values by name (the first call waits for the copy if it has not run yet)."""
        if self._read is None:
            if self.event is not None:
                self.event.synchronize()
            self._read = dict(zip(self.names, self.host.tolist()))
        return self._read

    def non_finite(self) -> list[str]:
        """What made the step non-finite (its loss terms, else "gradients"); empty for a finite step."""
        read = self.read()
        if math.isfinite(read["loss"]) and math.isfinite(read["grad_norm"]):
            return []
        return [k for k in self.terms if not math.isfinite(read[k])] or ["gradients"]

    def row(self) -> dict[str, float]:
        """The logged row of a finite step."""
        read = self.read()
        return {"step": self.step, "loss": read["loss"], **{k: read[k] for k in self.terms}, **self.diagnostics(),
                "lr": self.lr, "grad_norm": read["grad_norm"]}

    def skipped_row(self) -> dict[str, float]:
        """The logged row of a skipped step."""
        return {"step": self.step, "skipped": 1.0, "lr": self.lr, **self.diagnostics()}

    def diagnostics(self) -> dict[str, float]:
        """The logged diagnostics (t, opacity, occupancy): the values other than the loss, its terms and the gradient norm."""
        return {**self.info, **{k: v for k, v in self.read().items() if k not in ("loss", "grad_norm", *self.terms, *self.hidden)}}


def send(step: int, lr: float, terms: list[str], on_device: dict[str, torch.Tensor], info: dict[str, float],
         wait: bool = True, hidden: tuple[str, ...] = ()) -> StepValues:
    """Pack the 0-dim tensors `on_device` into one float64 vector and start its copy to the host.

    `wait=False` on CUDA: the copy goes to pinned memory behind the step's kernels and the host goes on (read() waits
    for it later); otherwise it is one transfer now, the host waiting for the step to finish.
    """
    names = list(on_device)
    first = next(iter(on_device.values()))
    packed = torch.stack([v.detach().reshape(()).to(first.device, torch.float64) for v in on_device.values()])
    if wait or packed.device.type != "cuda":
        return StepValues(step, lr, terms, names, packed.cpu(), None, info, hidden)
    host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
    host.copy_(packed, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return StepValues(step, lr, terms, names, host, event, info, hidden)
