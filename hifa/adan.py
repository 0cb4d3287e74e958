"""Adan with its step fused: one C++ pass per tensor for float32 CPU parameters, one Triton pass per large CUDA one."""

from __future__ import annotations

import torch
from pytorch_optimizer import Adan

from hifa import adan_triton
from hifa.cpu_kernels import cpu_kernels


def fusable(tensors: list[torch.Tensor]) -> bool:
    """Whether the fused kernel takes these tensors: contiguous float32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


class FusedAdan(Adan):
    """`pytorch_optimizer.Adan` whose foreach step runs a fused kernel where one applies (else Adan's own).

    The state dict is Adan's, so checkpoints move between them. On the CPU Adan's ~15 foreach passes over
    1.7 M parameters took ~12 ms of a ~130 ms demo step; the fused pass reads and writes each array once. On
    CUDA, parameters of at least 2^16 elements (the hash grid's table) take a Triton pass (hifa.adan_triton).
    """

    STATE = ("exp_avg", "exp_avg_sq", "exp_avg_diff", "previous_grad")

    def __init__(self, params, *args, fused: bool = True, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.fused = fused
        self._gate: torch.Tensor | None = None

    def _stepped(self) -> list[tuple[dict, list[torch.Tensor]]]:
        """Each group with its parameters that have a gradient."""
        return [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]

    def initialised(self) -> bool:
        """Whether every parameter with a gradient has its Adan state (a first step creates it from that step's gradient)."""
        return all(all(key in self.state[p] for key in self.STATE) for _, params in self._stepped() for p in params)

    def _kernel_gates(self) -> bool:
        """Whether every group's step runs through the Triton pass, which takes the gate itself."""
        if not self.fused or self.maximize:
            return False
        for group, params in self._stepped():
            if not params:  # nothing to step in this group (Adan skips it too)
                continue
            tensors = params + [p.grad for p in params] + [self.state[p][key] for p in params for key in self.STATE]
            if group["weight_decouple"] or not self._can_use_foreach(group) or not adan_triton.takes(tensors):
                return False
        return True

    @torch.no_grad()
    def gated_step(self, gate: torch.Tensor) -> None:
        """Adan's step where the 0-dim bool tensor `gate` holds; where it does not, parameters and state stay as they were.

        Nothing is read on the host, so on CUDA the step queues behind the backward without waiting for it. Needs the
        state of a first ungated step. Each group's step count advances either way: `uncount_step` takes a skipped one back.
        """
        if not self.initialised():
            raise RuntimeError("gated_step needs Adan's state: take the first step with step()")
        if self._kernel_gates():
            self._gate = gate
            try:
                self.step()
            finally:
                self._gate = None
            return
        # Elsewhere (CPU, no Triton): the step on every tensor, then the old values back where the gate is false.
        tensors = [t for _, params in self._stepped() for p in params for t in (p, *(self.state[p][key] for key in self.STATE))]
        before = [t.clone() for t in tensors]
        self.step()
        for tensor, old in zip(tensors, before):
            tensor.copy_(torch.where(gate, tensor, old))

    def uncount_step(self) -> None:
        """Take back one step of each group's count (a gated step that the gate skipped)."""
        for group in self.param_groups:
            group["step"] -= 1

    def _step_foreach(self, group, params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, prev_grads,  # type: ignore[override]
                      clip_global_grad_norm, step_size, diff_step_size, bias_correction3_sq) -> None:
        lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, prev_grads)
        tensors = [t for ts in lists for t in ts]
        plain = not self.fused or self.maximize or group["weight_decouple"] or isinstance(step_size, torch.Tensor)
        beta1, beta2, beta3 = group["betas"]
        decay = group["lr"] * group["weight_decay"]
        if self._gate is not None:  # gated_step checked that every tensor takes the Triton pass
            adan_triton.adan_step(*lists, clip_global_grad_norm, beta1, beta2, beta3, float(bias_correction3_sq), group["eps"],
                                  step_size, diff_step_size, decay, gate=self._gate)
            return None
        if not plain and adan_triton.takes(tensors):
            # The large tensors (the hash grid's table) in one Triton pass each, the small ones with the foreach step.
            large = [p.numel() >= adan_triton.MIN_ELEMENTS for p in params]
            pick = lambda keep: [[t for t, big in zip(ts, large) if big == keep] for ts in lists]  # noqa: E731
            adan_triton.adan_step(*pick(True), clip_global_grad_norm, beta1, beta2, beta3, float(bias_correction3_sq), group["eps"],
                                  step_size, diff_step_size, decay)
            small = pick(False)
            if small[0]:
                super()._step_foreach(group, *small, clip_global_grad_norm, step_size, diff_step_size, bias_correction3_sq)
            return None
        kernels = None if plain or not fusable(tensors) else cpu_kernels()
        if kernels is None:
            return super()._step_foreach(group, params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, prev_grads,
                                         clip_global_grad_norm, step_size, diff_step_size, bias_correction3_sq)
        kernels.adan_step(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, prev_grads, float(clip_global_grad_norm),
                          beta1, beta2, beta3, float(bias_correction3_sq), group["eps"], step_size, diff_step_size, decay)
        return None
