"""Kernel smoothing and importance sampling: method.md §3.5 and §8.9."""

import pytest
import torch

from hifa.sampling import bin_pmf, importance_samples, invert_cdf, smooth_pmf


def one_hot(n, k):
    p = torch.zeros(1, n, dtype=torch.float64)
    p[0, k] = 1.0
    return p


def circular(pmf, taps):
    left, centre, right = taps
    return left * torch.roll(pmf, 1, -1) + centre * pmf + right * torch.roll(pmf, -1, -1)


def test_smoothed_pmfs_sum_to_one():
    pmf = torch.rand(50, 30, dtype=torch.float64)
    pmf /= pmf.sum(-1, keepdim=True)
    for kind in ("boxcar", "trapezoid", "naive"):
        assert torch.allclose(smooth_pmf(pmf, kind).sum(-1), torch.ones(50, dtype=torch.float64))


def test_interior_one_hot_spreads_to_the_kernel():
    assert smooth_pmf(one_hot(7, 3), "boxcar")[0, 2:5].tolist() == pytest.approx([1 / 3] * 3)
    assert smooth_pmf(one_hot(7, 3), "trapezoid")[0, 2:5].tolist() == pytest.approx([1 / 8, 3 / 4, 1 / 8])


def test_end_bins_are_zero_padded_then_renormalised():
    box = smooth_pmf(one_hot(6, 0), "boxcar")[0]
    assert box.tolist() == pytest.approx([0.5, 0.5, 0, 0, 0, 0])
    trap = smooth_pmf(one_hot(6, 0), "trapezoid")[0]
    assert trap.tolist() == pytest.approx([6 / 7, 1 / 7, 0, 0, 0, 0])


def test_uniform_pmf_boxcar():
    uniform = torch.full((1, 6), 1 / 6, dtype=torch.float64)
    assert smooth_pmf(uniform, "boxcar")[0].tolist() == pytest.approx([1 / 8, 3 / 16, 3 / 16, 3 / 16, 3 / 16, 1 / 8])


def test_zero_padding_equals_circular_when_the_ends_are_empty():
    pmf = torch.rand(10, 12, dtype=torch.float64)
    pmf[:, 0] = pmf[:, -1] = 0
    pmf /= pmf.sum(-1, keepdim=True)
    assert torch.allclose(smooth_pmf(pmf, "boxcar"), circular(pmf, (1 / 3, 1 / 3, 1 / 3)))
    assert torch.allclose(smooth_pmf(pmf, "trapezoid"), circular(pmf, (1 / 8, 3 / 4, 1 / 8)))


def test_naive_deterministic_uniform_samples_are_evenly_spaced_between_midpoints():
    z = torch.linspace(2.0, 4.0, 9)[None].double()
    delta = torch.cat([z[:, 1:] - z[:, :-1], torch.full((1, 1), 0.25, dtype=torch.float64)], -1)
    weights = torch.full_like(z, 0.1)
    fine = importance_samples(z, delta, weights, 4, "naive", deterministic=True)
    first_mid, last_mid = float(z[0, 0] + delta[0, 0] / 2), float(z[0, -2] + delta[0, -2] / 2)
    expected = [first_mid + (last_mid - first_mid) * (j + 0.5) / 4 for j in range(4)]
    assert fine[0].tolist() == pytest.approx(expected)


def test_bins_use_interior_weights_plus_epsilon():
    z = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    delta = torch.ones_like(z)
    weights = torch.tensor([[9.0, 0.0, 1.0, 0.0, 9.0]], dtype=torch.float64)
    edges, pmf = bin_pmf(z, delta, weights, "naive")
    assert edges[0].tolist() == [0.5, 1.5, 2.5, 3.5]
    w = torch.tensor([1e-5, 1 + 1e-5, 1e-5], dtype=torch.float64)
    assert torch.allclose(pmf[0], w / w.sum())


def test_inverse_cdf_puts_samples_where_the_mass_is():
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    pmf = torch.tensor([[0.0, 1.0, 0.0]])
    u = torch.rand(1, 1000)
    samples = invert_cdf(edges, pmf, u)
    assert samples.min() >= 1.0 and samples.max() <= 2.0
    assert torch.allclose(samples, 1.0 + u, atol=1e-6)


def test_random_fine_samples_stay_within_the_bins():
    z = torch.sort(torch.rand(32, 16) * 2 + 2, dim=-1).values
    delta = torch.cat([z[:, 1:] - z[:, :-1], torch.full((32, 1), 0.1)], -1)
    w = torch.rand(32, 16)
    gen = torch.Generator().manual_seed(3)
    fine = importance_samples(z, delta, w, 64, "boxcar", deterministic=False, generator=gen)
    lo, hi = z[:, :1] + delta[:, :1] / 2, z[:, -2:-1] + delta[:, -2:-1] / 2
    assert torch.all(fine >= lo - 1e-5) and torch.all(fine <= hi + 1e-5)
