"""Geometry regularisers (method.md §5.2-§5.6, oracles §8.8, §8.11)."""

import math

import pytest
import torch

from hifa import volume
from hifa.guidance.schedules import ramp
from hifa.regularisers import (
    binary_entropy,
    monotonicity_loss,
    opacity_entropy_loss,
    orientation_loss,
    sample_entropy_loss,
    z_entropy_loss,
    zvar_loss,
)

# ---------------------------------------------------------------- z-variance (§5.2, §8.8)


def test_zvar_one_hot_weights_is_zero():
    w = torch.tensor([[0.0, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    z = torch.tensor([[2.0, 2.5, 3.0, 3.5], [2.2, 2.4, 2.6, 2.8]])
    assert zvar_loss(w, z, w.sum(-1)).item() == pytest.approx(0.0, abs=1e-12)


def test_zvar_two_equal_weights_is_quarter_squared_gap():
    w = torch.tensor([[0.3, 0.0, 0.3]])
    z = torch.tensor([[2.0, 2.5, 3.0]])
    assert zvar_loss(w, z, w.sum(-1)).item() == pytest.approx(0.25, rel=1e-6)
    # "whatever O": the per-ray variance ignores the opacity level, even below the mask threshold
    assert volume.z_variance(w * 0.5, z).item() == pytest.approx(0.25, rel=1e-6)
    z2 = torch.tensor([[1.0, 5.0, 4.0]])
    assert zvar_loss(w, z2, w.sum(-1)).item() == pytest.approx((1.0 - 4.0) ** 2 / 4, rel=1e-6)


def test_zvar_is_a_sum_over_masked_rays():
    w = torch.tensor([[0.3, 0.0, 0.3], [0.35, 0.0, 0.35], [0.2, 0.0, 0.2]])  # O = 0.6, 0.7, 0.4
    z = torch.tensor([[2.0, 2.5, 3.0], [2.0, 2.5, 4.0], [2.0, 2.5, 9.0]])
    expected = 0.25 + (4.0 - 2.0) ** 2 / 4  # third ray masked out
    assert zvar_loss(w, z, w.sum(-1)).item() == pytest.approx(expected, rel=1e-6)


def test_zvar_low_opacity_is_zero_without_gradient():
    w = torch.tensor([[0.25, 0.0, 0.25], [0.1, 0.2, 0.15]], requires_grad=True)  # O = 0.5 exactly, 0.45
    z = torch.tensor([[2.0, 2.5, 3.0], [2.0, 2.5, 3.0]])
    opacity = w.sum(-1)
    loss = zvar_loss(w, z, opacity)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(w.grad) == 0


def test_zvar_mask_is_not_differentiated():
    w = torch.tensor([[0.4, 0.1, 0.3]], requires_grad=True)
    z = torch.tensor([[2.0, 2.5, 3.0]])
    opacity = torch.tensor([0.8], requires_grad=True)  # a separate leaf: the mask must not reach it
    zvar_loss(w, z, opacity).backward()
    assert opacity.grad is None
    w2 = w.detach().clone().requires_grad_(True)
    volume.z_variance(w2, z).sum().backward()
    assert torch.allclose(w.grad, w2.grad)


@pytest.mark.parametrize("c", [0.5 / 0.6 + 1e-3, 1.2, 1.0 / 0.6])
def test_zvar_scaling_weights_within_mask_changes_nothing(c):
    w = torch.tensor([[0.1, 0.3, 0.2], [0.3, 0.0, 0.3]])  # O = 0.6 on both rays
    z = torch.tensor([[2.0, 2.6, 3.1], [2.0, 2.5, 3.0]])
    base = zvar_loss(w, z, w.sum(-1))
    assert zvar_loss(c * w, z, (c * w).sum(-1)).item() == pytest.approx(base.item(), rel=1e-6)


def test_zvar_ramp_weight():
    n = 10_000
    assert 3 * ramp(0, n) == 0.0
    assert 3 * ramp(n // 4, n) == pytest.approx(1.5)
    assert 3 * ramp(n // 2, n) == pytest.approx(3.0) and 3 * ramp(n, n) == pytest.approx(3.0)


# ---------------------------------------------------------------- z-entropy (§5.3)


@pytest.mark.parametrize("samples", [4, 8, 32])
def test_z_entropy_uniform_is_log_length_minus_log_opacity_independent_of_spacing(samples):
    length, opacity = 0.8, 0.7
    w = torch.full((1, samples), opacity / samples, dtype=torch.float64)
    deltas = torch.full((1, samples), length / samples, dtype=torch.float64)
    h = math.log(length) - math.log(opacity)
    assert z_entropy_loss(w, deltas).item() == pytest.approx(h * opacity, rel=1e-9)


def test_z_entropy_mean_over_rays_and_pdf_floor():
    w = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    deltas = torch.tensor([[0.25, 0.25, 0.25], [0.1, 0.1, 1e-9]], dtype=torch.float64)
    # ray 0: ŵ = (1/2, 1/2, 0), pdf = (2, 2, floor) -> H = -log 2, times O = 1; ray 1: O = 0 contributes 0
    assert z_entropy_loss(w, deltas).item() == pytest.approx(-math.log(2.0) / 2, rel=1e-9)


def test_z_entropy_opacity_factor_is_stop_gradient():
    w = torch.tensor([[0.2, 0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    deltas = torch.tensor([[0.1, 0.2, 0.1]], dtype=torch.float64)
    z_entropy_loss(w, deltas).backward()
    # analytic gradient of H·sg(O) with H = -Σ ŵ_k log(w_k/δ_k), ŵ = w/O:
    # ∂/∂w_j = O·[-(log p_j + 1)/O + Σ_k w_k log p_k / O²] = -(log p_j + 1) - H
    wd = w.detach()
    opacity = wd.sum()
    logp = (wd / deltas).log()
    h = -(wd / opacity * logp).sum()
    expected = -(logp + 1) - h
    assert torch.allclose(w.grad, expected, rtol=1e-9)


# ---------------------------------------------------------------- monotonicity (§5.4, §8.11)


def _mono(values):
    w = torch.tensor([values], dtype=torch.float64)
    return monotonicity_loss(w, torch.ones_like(w)).item()  # deltas = 1 => pdf = w


@pytest.mark.parametrize("values", [[0.0, 0.1, 0.4, 0.9, 0.3, 0.1, 0.0], [1.0, 0.5, 0.2], [0.1, 0.2, 0.3], [0, 1, 3, 2, 0]])
def test_monotonicity_unimodal_is_zero(values):
    assert _mono(values) == 0.0


def test_monotonicity_examples():
    assert _mono([0, 1, 0, 1, 0]) == pytest.approx(1 / 6)
    assert _mono([0, 0, 1, 0, 1, 0, 0]) == pytest.approx(1 / 8)


def test_monotonicity_first_argmax_and_dip_before_peak():
    # first maximum at k = 1: the rise to the second 2 lies after k* and is penalised by 2 - 1 = 1
    assert _mono([0, 2, 1, 2]) == pytest.approx(1 / 5)
    # a dip before the peak: decrease 3 -> 1 before k* = 3 costs 2, over 5 positions
    assert _mono([3, 1, 1, 5]) == pytest.approx(2 / 5)


def test_monotonicity_uses_pdf_and_averages_over_rays():
    w = torch.tensor([[0.0, 0.2, 0.0, 0.2, 0.0], [0.0, 0.2, 0.2, 0.2, 0.0]], dtype=torch.float64)
    deltas = torch.tensor([[1.0, 0.5, 1.0, 0.5, 1.0], [1.0, 1.0, 0.5, 1.0, 1.0]], dtype=torch.float64)
    # ray 0: pdf (0, .4, 0, .4, 0) -> penalty .4; ray 1: pdf (0, .2, .4, .2, 0) unimodal -> 0
    assert monotonicity_loss(w, deltas).item() == pytest.approx(0.4 / (2 * 6))


def test_monotonicity_gradient_pushes_second_bump_down():
    w = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]], requires_grad=True)
    monotonicity_loss(w, torch.ones_like(w)).backward()
    assert w.grad[0, 3] > 0 and w.grad[0, 2] < 0  # lower the later bump, fill the gap


# ---------------------------------------------------------------- entropies (§5.5), orientation (§5.6)


def test_binary_entropy_values_and_clamp():
    q = torch.tensor([0.5, 0.25, 0.0, 1.0, -3.0], dtype=torch.float64)
    b = binary_entropy(q)
    floor = -(1e-5 * math.log2(1e-5) + (1 - 1e-5) * math.log2(1 - 1e-5))
    assert b[0].item() == pytest.approx(1.0)
    assert b[1].item() == pytest.approx(0.8112781, rel=1e-6)
    for k in (2, 3, 4):
        assert b[k].item() == pytest.approx(floor, rel=1e-9)


def test_binary_entropy_gradient_is_finite_at_the_ends():
    q = torch.tensor([0.0, 1.0, 0.3], requires_grad=True)
    binary_entropy(q).sum().backward()
    assert torch.isfinite(q.grad).all()
    assert q.grad[2].item() == pytest.approx(math.log2(0.7 / 0.3), rel=1e-5)  # b'(q) = log2((1-q)/q)


def test_opacity_entropy_is_mean_over_rays():
    opacity = torch.tensor([0.5, 0.25, 0.75, 1.0])
    expected = (1.0 + 2 * 0.8112781 + binary_entropy(torch.tensor(1.0)).item()) / 4
    assert opacity_entropy_loss(opacity).item() == pytest.approx(expected, rel=1e-6)


def test_sample_entropy_is_on_weights_over_rays_times_samples():
    w = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.0, 0.0]])
    floor = binary_entropy(torch.tensor(0.0)).item()
    expected = (1.0 + 1.0 + floor + 0.8112781 + 2 * floor) / 6
    assert sample_entropy_loss(w).item() == pytest.approx(expected, rel=1e-6)
    # on per-sample weights, not on O = (1, 0.25)
    assert sample_entropy_loss(w).item() != pytest.approx(opacity_entropy_loss(w.sum(-1)).item())


def test_orientation_is_mean_of_per_ray_values_with_gradient():
    orient = torch.tensor([0.0, 0.3, 0.9], requires_grad=True)
    loss = orientation_loss(orient)
    assert loss.item() == pytest.approx(0.4)
    loss.backward()
    assert torch.allclose(orient.grad, torch.full((3,), 1 / 3))
