"""Volume-rendering identities of method.md §8.8 and §8.10."""

import pytest
import torch

from hifa import volume


def test_worked_example_weights_and_opacity():
    sigma = torch.tensor([[0.0, 1.0, 2.0, 4.0]], dtype=torch.float64)
    delta = torch.full_like(sigma, 0.5)
    alpha, w = volume.alpha_weights(sigma, delta)
    assert alpha[0].tolist() == pytest.approx([0.0, 0.393469, 0.632121, 0.864665], abs=1e-6)
    assert w[0].tolist() == pytest.approx([0.0, 0.393469, 0.383400, 0.192933], abs=1e-6)
    assert float(w.sum()) == pytest.approx(0.969803, abs=1e-6)


def test_opacity_equals_one_minus_total_transmittance():
    sigma = torch.rand(64, 40, dtype=torch.float64) * 5
    delta = torch.rand(64, 40, dtype=torch.float64) * 0.2
    alpha, w = volume.alpha_weights(sigma, delta)
    assert torch.allclose(w.sum(-1), 1 - torch.prod(1 - alpha, dim=-1), atol=1e-12)


def test_constant_colour_over_background():
    sigma, delta = torch.rand(16, 20) * 3, torch.full((16, 20), 0.1)
    _, w = volume.alpha_weights(sigma, delta)
    c, b = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1.0, 0.0, 0.3])
    out = volume.composite(w, c.expand(16, 20, 3), b)
    opacity = w.sum(-1, keepdim=True)
    assert torch.allclose(out, opacity * c + (1 - opacity) * b, atol=1e-6)


def test_depth_over_opacity_lies_within_the_samples():
    z = torch.sort(torch.rand(128, 30) * 2 + 2, dim=-1).values
    sigma = torch.rand(128, 30) * torch.randint(0, 2, (128, 30)) * 10
    _, w = volume.alpha_weights(sigma, volume.deltas(z, torch.full((128,), 0.05)))
    depth, opacity = volume.expected_depth(w, z), w.sum(-1)
    hit = opacity > 1e-6
    ratio = depth[hit] / opacity[hit]
    assert torch.all(ratio >= z[hit, 0] - 1e-5) and torch.all(ratio <= z[hit, -1] + 1e-5)


def test_coarse_grid_and_jitter():
    near, far = torch.tensor([2.0]), torch.tensor([4.0])
    z = volume.coarse_z(near, far, 5)
    assert z[0].tolist() == pytest.approx([2.0, 2.5, 3.0, 3.5, 4.0])
    jittered = volume.coarse_z(near, far, 5, jitter=torch.ones(1, 5))
    assert torch.allclose(jittered - z, torch.full((1, 5), 0.5 * 2.0 / 5))
    delta = volume.deltas(z, (far - near) / 5)
    assert delta[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.4])


def test_near_far_around_the_unit_bound():
    near, far = volume.near_far(torch.tensor([[0.0, 0.0, 3.0], [3.0, 4.0, 0.0]]))
    assert near.tolist() == [2.0, 4.0] and far.tolist() == [4.0, 6.0]


def test_z_variance_cases():
    z = torch.tensor([[2.0, 2.5, 3.0]])
    assert float(volume.z_variance(torch.tensor([[0.0, 0.7, 0.0]]), z)) == 0.0
    assert float(volume.z_variance(torch.tensor([[0.3, 0.0, 0.3]]), z)) == pytest.approx(0.25)
    # Two equal weights: (z1 - z2)^2 / 4 whatever the opacity.
    for level in (0.1, 0.45, 0.5):
        assert float(volume.z_variance(torch.tensor([[level, 0.0, level]]), z)) == pytest.approx(0.25)


def test_z_variance_is_invariant_to_scaling_weights():
    w = torch.tensor([[0.1, 0.3, 0.2, 0.15]])
    z = torch.tensor([[2.0, 2.2, 2.9, 3.4]])
    opacity = float(w.sum())
    base = volume.z_variance(w, z)
    for c in (0.5 / opacity + 1e-3, 0.9 / opacity, 1.0 / opacity):
        assert torch.allclose(volume.z_variance(w * c, z), base, atol=1e-6)


def test_pdf_is_weight_over_interval():
    w = torch.tensor([[0.2, 0.4]])
    delta = torch.tensor([[0.5, 0.0]])
    assert volume.sample_pdf_density(w, delta)[0].tolist() == pytest.approx([0.4, 0.4 / 1e-5])


def test_merge_samples_sorts_z_and_carries_each_value_along():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.rand(5, 4, generator=g), torch.rand(5, 3, generator=g)
    sigma_a, sigma_b = z_a * 10, z_b * 10  # a value that is a function of z
    rgb_a, rgb_b = torch.stack([z_a, -z_a, 2 * z_a], -1), torch.stack([z_b, -z_b, 2 * z_b], -1)
    z, (sigma, rgb) = volume.merge_samples(z_a, z_b, (sigma_a, rgb_a), (sigma_b, rgb_b))
    assert z.shape == (5, 7) and (z[:, 1:] >= z[:, :-1]).all()
    assert torch.equal(z, torch.sort(torch.cat([z_a, z_b], -1), -1).values)
    assert torch.equal(sigma, z * 10) and torch.equal(rgb, torch.stack([z, -z, 2 * z], -1))
