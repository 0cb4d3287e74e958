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

from hifa.transfer import to_device


class GradientScale:
    """The scale S and its schedule (torch.amp.GradScaler's defaults), kept on the device of the section.

    S, the count of clean steps and of overflows live in one device tensor that the backward updates with
    device ops, so no step waits for the GPU to learn whether its section overflowed: the next step's forward
    uses the updated S as a tensor. Reading `scale`, the counters or `state()` copies them to the host (one
    wait then, at a checkpoint or in a test).
    """

    def __init__(self, scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000,
                 good_steps: int = 0, overflows: int = 0):
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        # float64 holds S (a power of two times the initial scale) and both counters exactly.
        self._state = torch.tensor([scale, good_steps, overflows], dtype=torch.float64)

    def scale_on(self, device: torch.device) -> torch.Tensor:
        """S as a 0-dim tensor on `device` (moved there on first use, without a wait)."""
        if self._state.device != device:
            self._state = to_device(self._state, device)
        return self._state[0]

    def record(self, finite: torch.Tensor) -> None:
        """After one backward through the section (`finite`: a 0-dim bool tensor), on its device: back off on an overflow,
        grow after a run of clean steps."""
        state = self._state.to(finite.device)
        scale, good, overflows = state.unbind()
        good = torch.where(finite, good + 1, 0.0)
        grow = good >= self.growth_interval
        scale = torch.where(finite, torch.where(grow, scale * self.growth_factor, scale), (scale * self.backoff_factor).clamp(min=1.0))
        # Out of place: a forward that kept the previous S (a view of the previous tensor) still sees it.
        self._state = torch.stack([scale, torch.where(grow, 0.0, good), overflows + (~finite).double()])

    def _read(self) -> list[float]:
        return self._state.tolist()

    @property
    def scale(self) -> float:
        return self._read()[0]

    @scale.setter
    def scale(self, value: float) -> None:
        self._state = self._state.clone()
        self._state[0] = float(value)

    @property
    def good_steps(self) -> int:
        return int(self._read()[1])

    @property
    def overflows(self) -> int:
        return int(self._read()[2])

    def state(self) -> dict:
        """What a checkpoint keeps (a resumed run scales exactly as an uninterrupted one)."""
        scale, good, overflows = self._read()
        return {"scale": scale, "good_steps": int(good), "overflows": int(overflows)}

    def load(self, state: dict) -> None:
        """Restore state() output."""
        values = [float(state["scale"]), int(state["good_steps"]), int(state["overflows"])]
        self._state = torch.tensor(values, dtype=torch.float64, device=self._state.device)


class _ScaleUp(torch.autograd.Function):
    """Identity; the gradient is multiplied by S (entering the low-precision section)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
        ctx.scale = scaler.scale_on(x.device)  # the S of this step, even if the scaler changes before backward
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _ScaleDown(torch.autograd.Function):
    """Identity; the gradient is divided by S (leaving the section), or zeroed and S backed off on an overflow."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
        ctx.scaler, ctx.scale = scaler, scaler.scale_on(x.device)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.float() / ctx.scale
        finite = torch.isfinite(grad).all()
        ctx.scaler.record(finite)
        return torch.where(finite, grad, torch.zeros_like(grad)), None


def scaled_section(section, x: torch.Tensor, scaler: GradientScale) -> torch.Tensor:
    """section(x) with its backward run at gradient scale S; x and the result are fp32 on both sides."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return section(x)
    return _ScaleUp.apply(section(_ScaleDown.apply(x, scaler)), scaler)
