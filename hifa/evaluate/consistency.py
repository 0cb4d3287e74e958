"""Depth consistency between rendered depth and an estimator's relative disparity (scale/shift-aligned)."""

from __future__ import annotations

import numpy as np

MASK_THRESHOLD = 0.5  # as the depth loss (method.md §5.1): M = {O > 0.5}
MIN_PIXELS = 3
DEFINITION = (
    "disparity AbsRel after alignment: on M = {O > 0.5} (rendered opacity O), rendered disparity d = O / depth "
    "(depth = sum_k w_k z_k); the estimated disparity y is mapped by the least-squares scale and shift "
    "(s, t) = argmin sum_M (s y + t - d)^2 and abs_rel = mean_M |s y + t - d| / d (0: consistent up to an affine map "
    "of disparity); pearson = correlation of d and y on M; both per view, then averaged over the views (unweighted); "
    "views with fewer than 3 masked pixels are left out"
)


def fit_scale_shift(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(s, t) minimising sum (s * source + t - target)^2 over paired 1-D samples; s = 0 for a constant source."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    centred = source - source.mean()
    denom = float(centred @ centred)
    scale = float(centred @ (target - target.mean())) / denom if denom > 0 else 0.0
    return scale, float(target.mean() - scale * source.mean())


def view_consistency(depth: np.ndarray, opacity: np.ndarray, estimate: np.ndarray) -> dict[str, float | int | None]:
    """Per-view scores: abs_rel, pearson, scale, shift and the masked pixel count (None values when M is too small)."""
    mask = np.asarray(opacity) > MASK_THRESHOLD
    pixels = int(mask.sum())
    result: dict[str, float | int | None] = {"abs_rel": None, "pearson": None, "scale": None, "shift": None, "pixels": pixels}
    if pixels < MIN_PIXELS:
        return result
    d = np.asarray(opacity, np.float64)[mask] / np.maximum(np.asarray(depth, np.float64)[mask], 1e-12)
    y = np.asarray(estimate, np.float64)[mask]
    scale, shift = fit_scale_shift(y, d)
    dc, yc = d - d.mean(), y - y.mean()
    norm = float(np.sqrt((dc @ dc) * (yc @ yc)))
    result.update(
        abs_rel=float(np.mean(np.abs(scale * y + shift - d) / d)),
        pearson=float(np.clip(float(dc @ yc) / norm, -1.0, 1.0)) if norm > 0 else None,
        scale=scale,
        shift=shift,
    )
    return result


def depth_consistency(depth: np.ndarray, opacity: np.ndarray, estimate: np.ndarray) -> dict:
    """Scores of (V, H, W) views: per-view lists and means over the views that have a mask."""
    views = [view_consistency(d, o, e) for d, o, e in zip(depth, opacity, estimate)]

    def mean(key: str) -> float | None:
        values = [v[key] for v in views if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "abs_rel": mean("abs_rel"),
        "pearson": mean("pearson"),
        "views_scored": sum(v["abs_rel"] is not None for v in views),
        "per_view": views,
        "definition": DEFINITION,
    }
