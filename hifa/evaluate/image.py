"""Image metrics against ground truth."""

from __future__ import annotations

import torch


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels."""
    mse = torch.mean((prediction.float() - target.float()) ** 2).item()
    if mse == 0.0:
        return float("inf")
    return float(10.0 * torch.log10(torch.tensor(max_value**2 / mse)))


def masked_abs_error(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute error over the pixels where mask > 0.5 (NaN if none)."""
    sel = mask > 0.5
    if not sel.any():
        return float("nan")
    return float((prediction[sel] - target[sel]).abs().mean())
