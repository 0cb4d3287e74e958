"""Renderer, compositing and CDF-inversion equations of method.md §3, each against hand values or a direct computation."""

import pytest
import torch

from hifa import volume
from hifa.background import BackgroundMLP
from hifa.renderer import RayOptions, Renderer, RendererConfig, orient_per_ray
from hifa.sampling import importance_samples, invert_cdf

from tests.test_renderer import RADIUS, BallField


def renderer(coarse=16, fine=8, smoothing="boxcar"):
    return Renderer(BallField(density=50.0), BackgroundMLP(), RendererConfig(num_coarse=coarse, num_fine=fine, smoothing=smoothing))


def ray(direction=(0.0, 0.0, -1.0)):
    return torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([direction])


@pytest.mark.parametrize("fine", [0, 8])
def test_last_interval_is_the_coarse_spacing_over_t(fine):
    """§3.4: the last delta is Delta = (far - near)/T (2/16 here), not the grid step (far - near)/(T - 1)."""
    origins, dirs = ray()
    out = renderer(16, fine)(origins, dirs, RayOptions(background=torch.ones(3)))
    assert float(out["deltas"][0, -1]) == pytest.approx(2.0 / 16)
    if fine == 0:
        assert out["deltas"][0, :-1].tolist() == pytest.approx([2.0 / 15] * 15)


def _coarse_pass(origins, dirs, T):
    """The evaluation coarse samples of §3.3-3.4 computed directly for the ball."""
    near, far = 2.0, 4.0
    z = torch.linspace(near, far, T)[None]
    points = origins[:, None, :] + dirs[:, None, :] * z[..., None]
    sigma = (points.norm(dim=-1) < RADIUS).float() * 50.0
    delta = torch.cat([z[:, 1:] - z[:, :-1], torch.full((1, 1), (far - near) / T)], -1)
    alpha = 1 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones(1, 1), 1 - alpha[:, :-1] + 1e-15], -1), -1)
    return z, delta, alpha * trans


@pytest.mark.parametrize("smoothing", ["boxcar", "trapezoid"])
def test_fine_samples_follow_the_configured_smoothing(smoothing):
    """§3.5: the renderer's fine samples are the inverse CDF of the *smoothed* coarse pmf at u = (j + 1/2)/F."""
    origins, dirs = ray()
    z, delta, w = _coarse_pass(origins, dirs, 16)
    fine = importance_samples(z, delta, w, 8, smoothing, deterministic=True)
    out = renderer(16, 8, smoothing)(origins, dirs, RayOptions(background=torch.ones(3)))
    assert torch.allclose(out["z_vals"], torch.sort(torch.cat([z, fine], -1), -1).values, atol=1e-5)
    naive = renderer(16, 8, "naive")(origins, dirs, RayOptions(background=torch.ones(3)))
    assert (out["z_vals"] - naive["z_vals"]).abs().max() > 1e-3  # smoothing moves the samples on this ray


def test_normal_image_is_composited_over_the_background():
    """§3.6: normals = sum_k w_k (n_k + 1)/2 + (1 - O) bg; a ray that misses shows the background."""
    bg = torch.tensor([0.2, 0.4, 0.6])
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.5, 0.0, -1.0]])  # a hit and a miss
    with torch.no_grad():
        out = renderer()(origins, dirs, RayOptions(background=bg, need_normals=True))
    assert float(out["opacity"][1]) < 1e-6
    assert torch.allclose(out["normals"][1], bg, atol=1e-6)
    points = origins[:, None, :] + dirs[:, None, :] * out["z_vals"][..., None]
    n = torch.nn.functional.normalize(points, dim=-1)
    w = out["weights"]
    expected = (w[..., None] * (n + 1) / 2).sum(1) + (1 - w.sum(-1, keepdim=True)) * bg
    assert torch.allclose(out["normals"], expected, atol=1e-5)


def test_orientation_counts_only_normals_facing_along_the_ray():
    """§3.6: orient = sum_k sg(w_k) max(0, n_k . d)^2 with the unnormalised d."""
    w = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    n = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.6, 0.0, 0.8]]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    # n.d = 2, -2 (clamped to 0), 1.6 => 0.2*4 + 0 + 0.3*2.56
    assert float(orient_per_ray(w, n, d)) == pytest.approx(0.2 * 4 + 0.3 * 2.56)
    assert float(orient_per_ray(w, n, -d)) == pytest.approx(0.5 * 4)


def test_orientation_weights_are_stop_gradient():
    """§3.6 sg(w_k): the orientation term sends no gradient to the weights, only to the normals."""
    w = torch.tensor([[0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.6, 0.8]]], dtype=torch.float64, requires_grad=True)
    d = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    orient_per_ray(w, n, d).sum().backward()
    assert w.grad is None or torch.count_nonzero(w.grad) == 0
    assert n.grad[0, :, 2].tolist() == pytest.approx([2 * 0.2 * 1.0, 2 * 0.5 * 0.8])


def test_ball_front_surface_has_no_orientation_penalty():
    """Outward normals of a ball face the camera: n.d < 0 at the entry, so orient ~ 0 on a hit ray."""
    origins, dirs = ray()
    with torch.no_grad():
        out = renderer(64, 32)(origins, dirs, RayOptions(background=torch.ones(3), need_normals=True))
    assert float(out["opacity"][0]) > 0.99
    assert float(out["orient"][0]) < 1e-3


def test_composite_gradient_includes_the_background_term():
    """§3.6 image = sum w_k c_k + (1 - O) bg: d image / d w_k = c_k - bg (the background share is differentiated)."""
    w = torch.tensor([[0.1, 0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]], dtype=torch.float64)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    out = volume.composite(w, c, bg)
    assert out[0].tolist() == pytest.approx([0.1 + 0.1 + 0.4 * 0.2, 0.3 + 0.1 + 0.4 * 0.4, 0.1 + 0.4 * 0.6])
    out.sum().backward()
    assert w.grad[0].tolist() == pytest.approx((c - bg).sum(-1)[0].tolist())


def test_inverse_cdf_sets_tiny_denominators_to_one():
    """§3.5 step 4: a bin with CDF step < 1e-5 uses denominator 1, so samples in it stay at its left edge."""
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    pmf = torch.tensor([[0.5, 2e-6, 0.5 - 2e-6]], dtype=torch.float64)
    u = torch.tensor([[0.25, 0.500001, 0.75]], dtype=torch.float64)
    out = invert_cdf(edges, pmf, u)
    assert out[0].tolist() == pytest.approx([0.5, 1.0 + 1e-6, 2.0 + (0.75 - 0.500002) / (0.5 - 2e-6)], abs=1e-9)
