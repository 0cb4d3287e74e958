"""What every Triton kernel here shares: whether Triton imports, `tl`, compiled-or-interpreted kernels, launch options.

On CUDA tensors a kernel is compiled; on CPU tensors it runs through Triton's interpreter, which is slow and
exists so that the kernels are tested on machines without a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace

import torch


@functools.cache
def triton_available() -> bool:
    """Whether the triton package imports."""
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton install raises assorted errors on import
        return False
    return True


try:
    import triton.language as tl
except Exception:  # without triton the kernels are never built; their annotations still need a name
    tl = SimpleNamespace(constexpr=None)


@functools.cache
def kernel(fn: Callable, interpret: bool):
    """`fn` as a Triton kernel: compiled for CUDA, or run by Triton's interpreter for CPU tensors."""
    import triton

    if interpret:
        from triton.runtime.interpreter import InterpretedFunction  # what triton.jit returns under TRITON_INTERPRET=1

        return InterpretedFunction(fn)
    return triton.jit(fn)


def launch_options(device: torch.device) -> dict:
    """Compile options: no fused multiply-add on CUDA, so products and sums round as PyTorch's separate ops do."""
    # In the hash grid an FMA moved the finest levels' positions by an ulp of ~2048 (features by up to ~2e-4).
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}
