"""Dynamic gradient scaling across an fp16 section of the graph (the VAE encoder on CUDA).

HiFA's latent gradient is small (0.05 s_res (z - z_hat) per element, ~1e-3 late in a run) and spreads over
the encoder's 512^2 x 128 activations on its way back to the render, where fp16 (smallest normal 6e-5)
rounds it to subnormals or zero. The reference keeps fp32 weights and scales its loss with a GradScaler;
here the scale applies to this section alone: the gradient leaving the fp32 latent is multiplied by S on
its way into the fp16 graph and divided by S where it reaches the fp32 input again. An overflow drops that
step's gradient through the section (the rest of the step stands) and halves S; `growth_interval`
overflow-free steps double it, as torch.amp.GradScaler does.
"""

from __future__ import annotations

import torch


class GradientScale:
    """The scale S and its schedule (torch.amp.GradScaler's defaults).

    The backward only records whether its gradient was finite (a device tensor), so a CUDA backward does not
    wait for the GPU in the middle. The trainer settles the record after its end-of-step sync, when the value
    is ready; reading S, the counters or the state settles anything still pending (one host wait then).
    """

    def __init__(self, scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000,
                 good_steps: int = 0, overflows: int = 0):
        self._scale, self._good_steps, self._overflows = float(scale), int(good_steps), int(overflows)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._pending: list[torch.Tensor] = []

    def defer(self, finite: torch.Tensor) -> None:
        """Record one backward's finiteness (a 0-dim bool tensor) to be applied by the next settle()."""
        self._pending.append(finite)

    def settle(self) -> None:
        """Apply the recorded backwards, in order (one host sync for all of them)."""
        if self._pending:
            pending, self._pending = torch.stack(self._pending).tolist(), []
            for finite in pending:
                self.update(bool(finite))

    @property
    def scale(self) -> float:
        self.settle()
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self.settle()
        self._scale = float(value)

    @property
    def good_steps(self) -> int:
        self.settle()
        return self._good_steps

    @property
    def overflows(self) -> int:
        self.settle()
        return self._overflows

    def update(self, finite: bool) -> None:
        """After one backward through the section: back off on an overflow, grow after a run of clean steps."""
        if not finite:
            self._scale = max(self._scale * self.backoff_factor, 1.0)
            self._good_steps, self._overflows = 0, self._overflows + 1
            return
        self._good_steps += 1
        if self._good_steps >= self.growth_interval:
            self._scale, self._good_steps = self._scale * self.growth_factor, 0

    def state(self) -> dict:
        """What a checkpoint keeps (a resumed run scales exactly as an uninterrupted one)."""
        return {"scale": self.scale, "good_steps": self.good_steps, "overflows": self.overflows}

    def load(self, state: dict) -> None:
        """Restore state() output."""
        self._pending = []
        self._scale, self._good_steps, self._overflows = float(state["scale"]), int(state["good_steps"]), int(state["overflows"])


class _ScaleUp(torch.autograd.Function):
    """Identity; the gradient is multiplied by S (entering the low-precision section)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
        ctx.scale = scaler.scale  # the S of this step, even if the scaler changes before backward
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _ScaleDown(torch.autograd.Function):
    """Identity; the gradient is divided by S (leaving the section), or zeroed and S backed off on an overflow."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
        ctx.scaler, ctx.scale = scaler, scaler.scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.float() / ctx.scale
        finite = torch.isfinite(grad).all()
        ctx.scaler.defer(finite)
        return torch.where(finite, grad, torch.zeros_like(grad)), None


def scaled_section(section, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
    """section(x) with its backward run at gradient scale S; x and the result are fp32 on both sides."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return section(x)
    return _ScaleUp.apply(section(_ScaleDown.apply(x, scaler)), scaler)
