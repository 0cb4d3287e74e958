"""Adan's step for large float32 parameters in one Triton pass (CUDA; Triton's interpreter on CPU tensors, for tests).

The same arithmetic, in the same order and rounding, as the fused CPU kernel (hifa/csrc/adan_cpu.cpp): each
array is read and written once, where Adan's foreach step makes about fifteen passes over the hash grid's
table. The clip factor is read from device memory, so the host never waits for the gradient norm.
"""

from __future__ import annotations

import numpy as np
import torch

from hifa.triton_support import kernel, launch_options, tl, triton_available

BLOCK = 1024
MIN_ELEMENTS = 1 << 16  # below this a parameter stays with the foreach step: a launch per tensor costs more


def _kernel(p_ptr, g_ptr, m_ptr, v_ptr, n_ptr, prev_ptr, clip_ptr, gate_ptr, count, w1, w2, b2, b3, w3, bc3, eps, s1, s2, d,
            BLOCK: tl.constexpr, GATED: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < count
    if GATED:  # a skipped step (a non-finite loss) reads and writes nothing: the state stays as it was
        mask = mask & (tl.load(gate_ptr) != 0)
    clip = tl.load(clip_ptr)
    grad = tl.load(g_ptr + offsets, mask=mask, other=0.0) * clip
    m = tl.load(m_ptr + offsets, mask=mask, other=0.0)
    n = tl.load(n_ptr + offsets, mask=mask, other=0.0)
    v = tl.load(v_ptr + offsets, mask=mask, other=0.0)
    diff = tl.load(prev_ptr + offsets, mask=mask, other=0.0) + grad  # prev holds -g of the previous step
    m = m + w1 * (grad - m)
    n = n + w2 * (diff - n)
    diff = diff * b2 + grad
    v = v * b3 + w3 * (diff * diff)
    den = tl.div_rn(tl.sqrt_rn(v), bc3) + eps
    q = tl.load(p_ptr + offsets, mask=mask, other=0.0) + s1 * tl.div_rn(m, den)
    q = q + s2 * tl.div_rn(n, den)
    tl.store(p_ptr + offsets, tl.div_rn(q, d), mask=mask)
    tl.store(g_ptr + offsets, grad, mask=mask)  # the foreach step scales the gradients in place too
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(n_ptr + offsets, n, mask=mask)
    tl.store(v_ptr + offsets, v, mask=mask)
    tl.store(prev_ptr + offsets, -grad, mask=mask)


def takes(tensors: list[torch.Tensor]) -> bool:
    """Whether the kernel applies: Triton present, every tensor contiguous float32 on one CUDA device."""
    return (bool(tensors) and triton_available() and all(t.device.type == "cuda" and t.dtype == torch.float32 and t.is_contiguous()
                                                         for t in tensors) and len({t.device for t in tensors}) == 1)


def adan_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
              exp_avg_diffs: list[torch.Tensor], prev_grads: list[torch.Tensor], clip: torch.Tensor | float, beta1: float,
              beta2: float, beta3: float, bias_correction3_sq: float, eps: float, step_size: float, diff_step_size: float,
              decay: float, gate: torch.Tensor | None = None) -> None:
    """One Adan step in place, per tensor, with hifa.cpu_kernels' `adan_step` arguments (the clip factor may be a tensor).

    `gate`: a 0-dim bool device tensor; where it is false the step leaves every tensor as it was (no host read).
    """
    if not params:
        return
    device = params[0].device
    # A float is filled on the device: a copy from pageable host memory would wait for the GPU.
    clip_t = clip.reshape(1).to(device, torch.float32) if isinstance(clip, torch.Tensor) else torch.full((1,), clip, device=device)
    # Python floats as float32 kernel arguments, as the foreach ops and the CPU kernel see them.
    scalars = (1.0 - beta1, 1.0 - beta2, beta2, beta3, 1.0 - beta3, bias_correction3_sq, eps, -step_size, -diff_step_size, 1.0 + decay)
    scalars = [float(np.float32(s)) for s in scalars]
    gate_t = clip_t if gate is None else gate.reshape(1).to(device, torch.int32)
    step = kernel(_kernel, device.type != "cuda")
    for tensors in zip(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, prev_grads):
        count = tensors[0].numel()
        p, g, m, v, n, prev = tensors
        step[(-(-count // BLOCK),)](p, g, m, v, n, prev, clip_t, gate_t, count, *scalars, BLOCK=BLOCK, GATED=gate is not None,
                                    **launch_options(device))
