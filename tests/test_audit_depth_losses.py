"""Audit: the scale/shift-invariant depth loss against a numpy least-squares fit, and the oracle estimator's resize."""

import numpy as np
import pytest
import torch

from hifa.depth import OracleDepthEstimator, pearson_depth_loss, ssi_depth_loss


def lstsq_loss(depth, opacity, estimate):
    """mean_M((s d + t - y_hat)^2) minimised over (s, t) by numpy, d = O / depth, y_hat the estimate standardised on M."""
    m = opacity > 0.5
    if m.sum() < 2:
        return 0.0
    d = opacity[m] / depth[m]
    y = estimate[m]
    y_hat = (y - y.mean()) / y.std(ddof=1)
    design = np.stack([d, np.ones_like(d)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y_hat, rcond=None)
    return float(np.mean((design @ coef - y_hat) ** 2))


def batch(seed=0, shape=(3, 6, 7)):
    rng = np.random.default_rng(seed)
    opacity = rng.uniform(0.0, 1.0, shape)
    depth = opacity * rng.uniform(2.0, 4.0, shape)
    estimate = rng.uniform(0.1, 2.0, shape)
    return depth, opacity, estimate


def test_ssi_loss_is_the_least_squares_affine_residual_on_the_mask():
    depth, opacity, estimate = batch()
    expected = np.mean([lstsq_loss(depth[b], opacity[b], estimate[b]) for b in range(3)])
    got = ssi_depth_loss(*(torch.from_numpy(a) for a in (depth, opacity, estimate)))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_non_finite_estimates_off_the_mask_change_nothing():
    depth, opacity, estimate = batch(1)
    off = opacity <= 0.5
    assert off.any()
    wild = estimate.copy()
    wild[off] = np.nan
    wild[off & (depth > 1.0)] = np.inf
    tensors = [torch.from_numpy(a) for a in (depth, opacity)]
    for fn in (ssi_depth_loss, pearson_depth_loss):
        clean = fn(*tensors, torch.from_numpy(estimate))
        dirty = fn(*tensors, torch.from_numpy(wild))
        assert torch.isfinite(dirty) and dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    expected = np.mean([lstsq_loss(depth[b], opacity[b], estimate[b]) for b in range(3)])
    assert ssi_depth_loss(*tensors, torch.from_numpy(wild)).item() == pytest.approx(expected, rel=1e-9)


class _Prior:
    last_disparity = None


def test_oracle_estimator_resizes_to_non_square_images_bilinearly_with_half_pixel_centres():
    prior = _Prior()
    prior.last_disparity = torch.arange(4, dtype=torch.float32).repeat(4, 1)[None]  # (1, 4, 4): value = column
    out = OracleDepthEstimator(prior).estimate(torch.rand(1, 3, 8, 12))
    assert out.shape == (1, 8, 12)
    # Output column J samples source x = (J + 1/2) * 4/12 - 1/2, clamped to [0, 3]; a linear ramp stays linear.
    expected = np.clip((np.arange(12) + 0.5) * 4 / 12 - 0.5, 0.0, 3.0)
    assert torch.allclose(out[0], torch.tensor(expected, dtype=torch.float32).expand(8, 12), atol=1e-6)
    sized = OracleDepthEstimator(prior).estimate(torch.rand(1, 3, 8, 12), size=(2, 6))
    assert sized.shape == (1, 2, 6)
