"""Host-to-device copies that do not wait for the GPU (the run's random draws are made on the host)."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; a CPU -> CUDA copy goes through pinned memory without a stream sync.

    A copy from pageable host memory synchronises the stream first (CUDA's documented behaviour), so every
    host-drawn noise tensor moved mid-step made the host wait for the GPU to drain before launching more work.
    PyTorch's pinned-memory cache keeps the staging block alive until the copy has run.
    """
    device = torch.device(device)
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
