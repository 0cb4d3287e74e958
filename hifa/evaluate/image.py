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


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03) of (..., H, W, C) images.

    Local statistics over full windows only (no padding); channels and leading dimensions are averaged.
    """
    if prediction.shape != target.shape or prediction.dim() < 3:
        raise ValueError(f"ssim needs two images (..., H, W, C) of one shape, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    h, w, c = prediction.shape[-3:]
    if min(h, w) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels, got {h}x{w}")
    x = prediction.double().reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = target.double().reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    g = _gaussian_window(window, sigma, torch.float64)
    blur = lambda z: torch.nn.functional.conv2d(torch.nn.functional.conv2d(z, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())
